"""What a DuoDecoding answer turn records in its `stats`: one schema, which the loop writes and the report reads."""
from dataclasses import asdict, dataclass, field, fields


@dataclass
class TurnStats:
    """Per turn. Rounds: k_hist (rounds by the number of sequences tried), gamma (mean), acceptance (the draft's, per
    token), lookup_acceptance (the share of looked-up tokens kept, of those reached), free_rounds / free_accepted
    (rounds that verified looked-up tokens, and what they gained). Time: verify_ms and verify_tokens (mean forward
    after the prefill, and the tokens it fed), target_idle_share (of which catch_up_idle_share: waiting for catch-up
    drafts), draft_idle_share. Modes: mode_rounds, mode_switches (why), mode_rates (modelled tokens/s), mode_measured
    (gained tokens/s), mode_costs_ms (the measured costs of each mode that ran, under its name), mode_threads (the
    threads each side had in each mode that ran) and threads (the most each side had in any)."""
    k_hist: dict = field(default_factory=dict)
    gamma: float = 0.0
    acceptance: float = 0.0
    lookup_acceptance: float = 0.0
    free_rounds: int = 0
    free_accepted: int = 0
    verify_ms: float = 0.0
    verify_tokens: float = 0.0
    target_idle_share: float = 0.0
    catch_up_idle_share: float = 0.0
    draft_idle_share: float = 0.0
    mode_rounds: dict = field(default_factory=dict)
    mode_switches: list = field(default_factory=list)
    mode_rates: dict = field(default_factory=dict)
    mode_measured: dict = field(default_factory=dict)
    mode_costs_ms: dict = field(default_factory=dict)
    mode_threads: dict = field(default_factory=dict)
    threads: dict = field(default_factory=dict)

    def write(self):
        return asdict(self)

    @classmethod
    def read(cls, stats):
        """From an answer's stats; fields an older answer lacks keep their defaults."""
        return cls(**{f.name: stats[f.name] for f in fields(cls) if f.name in stats})
