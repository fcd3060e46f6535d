"""What every method receives and returns."""
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Callable

from src.verify import distributions, verify_chain, verify_tree


@dataclass
class Sampling:
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    @property
    def greedy(self):
        return self.temperature <= 0


REGIMES = ("split", "shared")


@dataclass(frozen=True)
class Cores:
    """The cores a run's methods may use, one regime for every method of a run.

    split (the paper's hardware stood in on one CPU): the target owns `target` cores, the draft owns `draft`
    others, and no method borrows the other side's. shared (a CPU-only machine): every method may use all
    `every` cores; a method that runs one side at a time gives that side every core in its turn."""
    regime: str = "split"
    target: int = 1
    draft: int = 1
    every: int = 1
    draft_sweep_ms: dict = field(default=None, compare=False)  # {threads: ms per step} where a sweep chose `draft`

    @property
    def shared(self):
        return self.regime == "shared"

    def sides(self):
        """(target's threads, draft's threads) for a method that runs one side at a time."""
        return (self.every, self.every) if self.shared else (self.target, self.draft)

    def as_dict(self):
        return {"regime": self.regime, "target": self.target, "draft": self.draft, "every": self.every,
                "draft_sweep_ms": self.draft_sweep_ms}


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


@dataclass
class Method:
    """What a method's `make` returns: `forward(prompt_ids, max_new_tokens, sampling, gen) -> Generation`, the
    settings it chose or measured (recorded in every answer), and what stops its workers when the run ends."""
    forward: Callable
    settings: dict = field(default_factory=dict)
    close: Callable = lambda: None
    worker: object = None

    def __call__(self, prompt_ids, max_new_tokens, sampling, gen):
        return self.forward(prompt_ids, max_new_tokens, sampling, gen)


# A callable that takes the tokens each round accepts, as they are accepted (src/generate.py streams them)
LISTENER = ContextVar("listener", default=None)


class Clock:
    """Time since the call started; the first `gained(tokens)` call fixes the TTFT. Each call passes the round's
    accepted tokens to the listener set in LISTENER, if any."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.ttft = None
        self.listener = LISTENER.get()

    def gained(self, tokens):
        if self.ttft is None:
            self.ttft = time.perf_counter() - self.t0
        if self.listener is not None:
            self.listener(list(tokens))


def stopped(tokens, stop_ids):
    """Whether `tokens` hold one of the model's stop ids (Qwen's <|im_end|> and <|endoftext|>, say)."""
    return not stop_ids.isdisjoint(tokens)


def finish(tokens, stop_ids, max_new_tokens, accept_lengths, clock, stats=None):
    """Cut the output at the first stop id (excluded) or at max_new_tokens, and the accept lengths with it,
    so that they sum to the tokens returned (Spec-Bench's mean accepted tokens counts no token past the end)."""
    stop = "length"
    tokens = tokens[:max_new_tokens]
    end = next((i for i, t in enumerate(tokens) if t in stop_ids), None)
    if end is not None:
        tokens, stop = tokens[:end], "eos"
    return Generation(tokens, cut_accepts(accept_lengths, len(tokens), stop == "eos"), clock.ttft or 0.0, stop,
                      stats or {})


def cut_accepts(accept_lengths, n, eos=False):
    """The accept lengths of the first n tokens, cut where they end. The round that gained the stop token (at
    position n) stays, counting only what came before it: it was a forward all the same."""
    out, start = [], 0
    for a in accept_lengths:
        if start > n or (start == n and not eos):
            break
        out.append(min(a, n - start))
        start += a
    return out


def common_prefix(a, b):
    """How many leading tokens a and b share. The sequences compared here share long prefixes, so this
    bisects with slice comparisons (run in C) instead of walking token by token in Python."""
    a, b = list(a), list(b)
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while hi - lo > 1:  # a[:lo] == b[:lo], a[:hi] != b[:hi]
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def decode_loop(target, prompt_ids, max_new_tokens, step):
    """Rounds of draft-then-verify until EOS or max_new_tokens.

    The target's cache holds everything but the last token; `step(seq, budget)` runs one target
    forward from there and returns the tokens it verified (at least one). `budget` is how many draft
    tokens the round may still use."""
    clock = Clock()
    target.reset()
    if len(prompt_ids) > 1:
        target.forward(prompt_ids[:-1])
    seq, new, accepts = list(prompt_ids), [], []
    done = False
    while len(new) < max_new_tokens and not done:
        gained = step(seq, max_new_tokens - len(new) - 1)
        clock.gained(gained)
        seq += gained
        new += gained
        accepts.append(len(gained))
        done = stopped(gained, target.stop_ids)
    return finish(new, target.stop_ids, max_new_tokens, accepts, clock)


def speculative_loop(target, prompt_ids, max_new_tokens, sampling, gen, propose):
    """Chain drafts (SpS, PLD): `propose(seq, budget)` returns (drafts, q_rows); q_rows are the draft's
    distributions for sampled drafts, or None for deterministic ones."""
    def step(seq, budget):
        drafts, q_rows = propose(seq, budget) if budget > 0 else ([], None)
        n, nxt, _ = chain_step(target, seq, drafts, sampling, gen, q_rows)
        return drafts[:n] + [nxt]

    return decode_loop(target, prompt_ids, max_new_tokens, step)


def chain_step(target, seq, drafts, sampling, gen, q_rows=None):
    """Verify a chain of drafts after seq in one target forward, feeding first what the cache lacks of
    seq, and roll the cache back to the accepted tokens. Returns (number accepted, next token, the
    distributions after seq and after each draft)."""
    unseen = len(seq) - 1 - target.length
    logits = target.forward(seq[target.length:] + drafts)[unseen:]
    p_rows = distributions(logits, sampling.temperature, sampling.top_k, sampling.top_p)
    n, nxt = verify_chain(drafts, p_rows, gen, q_rows)
    target.rollback(len(seq) + n)
    return n, nxt, p_rows


def build_tree(sequences, max_nodes):
    """A trie of the sequences (REST's retrieved continuations, Lookahead's n-grams): (tokens, parents), parents
    before children, at most max_nodes nodes."""
    tokens, parents, index = [], [], {}
    for s in sequences:
        parent = -1
        for tok in s:
            key = (parent, tok)
            if key not in index:
                if len(tokens) >= max_nodes:
                    break
                index[key] = len(tokens)
                tokens.append(tok)
                parents.append(parent)
            parent = index[key]
    return tokens, parents


def tree_step(target, seq, tokens, parents, sampling, gen):
    """Verify a token tree hung under seq[-1] (the cache holds seq[:-1]) in one target forward, and keep
    the accepted path in the cache. Returns (path as node indices, next token, the distributions after
    seq[-1] and after each node)."""
    # seq[-1] is the forward's root; node i sits at index i + 1
    logits = target.verify_tree([seq[-1]] + tokens, [-1] + [p + 1 if p >= 0 else 0 for p in parents])
    probs = distributions(logits, sampling.temperature, sampling.top_k, sampling.top_p)
    path, nxt = verify_tree(tokens, parents, probs[0], probs[1:], gen)
    target.keep_path(len(seq) - 1, [0] + [n + 1 for n in path])
    return path, nxt, probs


def median_seconds(fn, reps=7, most_s=None):
    """The median time of `reps` calls of fn; with `most_s`, fewer (at least 3) once they have taken that long: a
    start-up probe of a large model need not spend seconds per size."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if most_s is not None and len(times) >= 3 and sum(times) > most_s:
            break
    return sorted(times)[len(times) // 2]
