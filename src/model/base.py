"""What every method receives and returns."""
import time
from dataclasses import dataclass, field


@dataclass
class Sampling:
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    @property
    def greedy(self):
        return self.temperature <= 0


@dataclass
class Generation:
    """One answer turn. `accept_lengths` holds the tokens gained per target forward (bonus included)."""
    token_ids: list
    accept_lengths: list = field(default_factory=list)
    ttft: float = 0.0
    stop: str = "length"  # "eos" or "length"
    stats: dict = field(default_factory=dict)

    @property
    def decoding_steps(self):
        return len(self.accept_lengths)


class Clock:
    """Time since the call started; the first `first_token()` call fixes the TTFT."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.ttft = None

    def first_token(self):
        if self.ttft is None:
            self.ttft = time.perf_counter() - self.t0


def finish(tokens, eos_id, max_new_tokens, accept_lengths, clock, stats=None):
    """Cut the output at EOS (excluded) or at max_new_tokens."""
    stop = "length"
    if eos_id is not None and eos_id in tokens[:max_new_tokens]:
        tokens, stop = tokens[:tokens.index(eos_id)], "eos"
    tokens = tokens[:max_new_tokens]
    return Generation(tokens, accept_lengths, clock.ttft or 0.0, stop, stats or {})
