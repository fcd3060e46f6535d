"""DuoDecoding (arXiv 2503.00784): a llama.cpp draft on the CPU drafts while the target verifies.

rules.py (pure rules: theta, gamma, rates), policy.py (what the rounds measure; gamma and the mode), drafter.py
(the draft's sequences, one llama_decode a step), worker.py (where it runs: a process or a thread), loop.py (the
rounds). The paper's terms: pre- / post-verify = a round with nothing / a draft pending (Rounds.verify); gamma =
Budget.gamma() (--gamma-rule time: the paper's speed ratio); the k sequences = rules.choose_first_tokens, theta =
p(1st top-1) * p(2nd top-1) (--max-seqs); the parallel draft = Rounds.job_beside. Beyond the paper: looked-up
n-grams as free candidates, alone or after the pending draft.
"""
import os
import sys
import weakref
from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from src.argtypes import gamma_or_auto, non_negative, non_negative_or, ranged
from src.model.base import Cores, Method, median_seconds
from src.model.duodec.drafter import Drafter, Drafts  # noqa: F401
from src.model.duodec.loop import Options, Rounds, Threads  # noqa: F401
from src.model.duodec.policy import LOOKUP_MOST, Budget, Costs, Modes, Tunables  # noqa: F401
from src.model.duodec.rules import (MODES, balance_gamma, chain_tokens,  # noqa: F401
                                    choose_first_tokens, kind, overlap_rate)
from src.model.duodec.worker import WORKER_TIMEOUT, DraftJob, ProcessWorker, ThreadWorker, job_timeout  # noqa: F401

DRAFT = "gguf"
# the paper's scheme: the draft always beside the target, the theta rule with up to 8 sequences, gamma from the
# speed ratio, gamma tokens every round, no looked-up candidates
PRESETS = {"paper": {"mode": "overlap", "max_seqs": 8, "gamma_rule": "time", "lookup_ngram": 0, "fit": False,
                    "drafts": "greedy", "wait_for_prompt": True, "catch_up": 0}}


@dataclass(frozen=True)
class Config:
    """DuoDecoding's choices, built once from its flags (a preset's choices over them), feeding every constructor,
    and recorded whole in every answer's settings. The flags' help (add_args) says what each does."""
    preset: str = "default"
    gamma: object = "auto"  # "auto" or a number of draft tokens
    gamma_rule: str = "acceptance"
    mode: str = None  # None: overlap on split cores, auto on shared ones
    max_seqs: int = 1
    force_seqs: int = 0
    catch_up: object = "auto"  # "auto" or a number of draft tokens
    lookup_ngram: int = 3
    lookup_extend: bool = True
    fit: bool = True
    drafts: str = "sampled"
    wait_for_prompt: bool = False
    worker: str = "process"

    @classmethod
    def from_args(cls, args):
        a = vars(args)
        flags = {f.name: a[f.name] for f in fields(cls) if f.name in a}
        flags.update(fit=not args.no_fit, lookup_extend=not args.no_lookup_extend,
                     gamma="auto" if args.gamma in (None, "auto") else int(args.gamma),
                     max_seqs=max(args.max_seqs, args.force_seqs))
        return cls(**{**flags, **PRESETS.get(args.preset, {})})

    def options(self, n_seq):
        """The loop's options, with the draft's sequence slots capping the sequences."""
        return Options(max_seqs=min(self.max_seqs, n_seq), force_k=self.force_seqs, catch_up=self.catch_up,
                       lookup_ngram=self.lookup_ngram, fit=self.fit,
                       draw=self.drafts == "sampled", read_beside=not self.wait_for_prompt, extend=self.lookup_extend)


def add_args(ap):
    ap.add_argument("--gamma", type=gamma_or_auto, default="auto",
                    help="draft tokens per round: 'auto' (from the measured speeds, see --gamma-rule) or N; "
                         "a round drafts fewer where they would not end within its forward (see --no-fit)")
    ap.add_argument("--max-seqs", type=ranged(int, 1, 8), default=1,
                    help="duodec: most sequences the theta rule drafts when the draft is unsure of its first token "
                         "(the paper: 8). Default 1: they are tried only when the whole pending draft holds, yet "
                         "cost depth or step time in every round")
    ap.add_argument("--worker", choices=["thread", "process"], default="process",
                    help="duodec: where the draft runs. process (default): its own process, so the drafting "
                         "loop never holds the GIL the target's Python needs between kernels; thread: in the "
                         "target's process (no pipe, a quick start: the tests')")
    ap.add_argument("--lookup-ngram", type=non_negative, default=3,
                    help="duodec: with nothing pending, first try free candidates (the tokens after an earlier "
                         "occurrence of the last N tokens) before waiting for draft tokens; 0: off")
    ap.add_argument("--no-lookup-extend", action="store_true",
                    help="duodec: verify the pending draft alone. By default the looked-up tokens that would "
                         "follow it (--lookup-ngram) ride in the same forward: where text is copied they gain tokens "
                         "the draft has not reached, at the cost of a few more tokens in a forward nearly flat in them")
    ap.add_argument("--catch-up", type=non_negative_or("auto"), default="auto",
                    help="duodec, overlapped rounds: after a rejection, wait for this many draft tokens before the "
                         "next target forward, so the drained pipeline restarts with a chain; auto (default): as many "
                         "as a sequential round (SpS's) would draft at the measured costs and acceptance. 0: the "
                         "paper's pre-verify round (a forward over the target's own token while the draft drafts "
                         "from it), so the target never waits")
    ap.add_argument("--gamma-rule", choices=["acceptance", "time"], default="acceptance",
                    help="duodec, with --gamma auto: maximise expected tokens per second given the acceptance "
                         "measured so far, or balance drafting and verification time (the paper's rule)")
    ap.add_argument("--no-fit", action="store_true",
                    help="duodec: draft gamma tokens in every round (the paper), even where the target's forward "
                         "is shorter than the drafting (one token after a rejection) and so waits for it; by "
                         "default a round drafts only what ends within its forward, timed in the rounds")
    ap.add_argument("--drafts", choices=["sampled", "greedy"], default="sampled",
                    help="duodec, under sampling (temperature > 0): sampled (default): the drafts are drawn from the "
                         "draft's distribution and tested by the rejection rule, as SpS does (k sequences: first "
                         "tokens drawn without replacement, tried by recursive rejection); greedy: the draft's top "
                         "tokens, tested by the deterministic-candidate rule (upstream, which is greedy-only). "
                         "--force-seqs always drafts top tokens")
    ap.add_argument("--wait-for-prompt", action="store_true",
                    help="duodec: after the prefill, the target waits until the draft has read the prompt (upstream). "
                         "By default it goes on with its own tokens and free candidates meanwhile, which a long prompt "
                         "read on the draft's fewer cores would otherwise hold up")
    ap.add_argument("--mode", choices=["auto", *MODES], default=None,
                    help="duodec: how the rounds run. overlap: the draft drafts while the target verifies (the paper); "
                         "sequential: draft, then verify; none: the target alone with free candidates; -all: that "
                         "side takes every core in its turn; auto: whichever is fastest by the costs its own rounds "
                         "measured (the others re-measured now and then) at the question's acceptance. Default: "
                         "overlap on split cores, auto on shared ones")
    ap.add_argument("--preset", choices=["default", *PRESETS], default="default",
                    help="duodec: paper: the paper's scheme (" + ", ".join(f"{k} {v}" for k, v in PRESETS["paper"].items())
                    + "), over any of those flags given; default: the flags as given")
    ap.add_argument("--force-seqs", type=ranged(int, 0, 8), default=0,
                    help="duodec: always draft this many sequences (the top first tokens); for ablations and tests")


PROBE_S = 1.0  # seconds the start-up probe spends per size at most (after 3 repetitions): the rounds re-measure


def measure(target, draft, max_seqs, context_len=64, sizes=(1, 2, 4, 8, 16, 32, 64), reps=9):
    """Per-step time of the draft with k = 1..max_seqs sequences, and the target's forward time for
    n new tokens, on a context of `context_len` tokens."""
    ctx = [int(t) for t in np.random.default_rng(0).integers(3, min(draft.n_vocab, len(target.tokenizer)),
                                                               context_len)]
    drafter = Drafter(draft)
    drafter.reset()
    draft_step = {}
    for k in sorted({1, 2, 4, max_seqs}):
        if k > max_seqs:
            continue
        drafter.sync(ctx)
        for s in range(1, k):
            draft.fork(0, s, len(ctx))

        def step(k=k):
            draft.decode([(5, s, True) for s in range(k)])
            for s in range(k):
                draft.rollback(len(ctx), s)
        draft_step[k] = median_seconds(step, reps, PROBE_S)
        drafter.held = [list(ctx)]
    drafter.reset()
    return draft_step, measure_target(target, ctx, sizes, reps)


# A target's probe, per target and thread count: the methods that share one loaded target (DuoDecoding's variants,
# PEARL) start from the same measurement instead of repeating it; their rounds re-measure as they go.
_TARGET_PROBES = weakref.WeakKeyDictionary()


def measure_target(target, ctx, sizes, reps):
    """The target's forward time for n new tokens after `ctx`, for each n in sizes."""
    key = (tuple(ctx), tuple(sizes), reps, torch.get_num_threads())
    done = _TARGET_PROBES.setdefault(target, {})
    if key in done:
        return dict(done[key])
    target_fwd = {}
    target.reset()
    target.forward(ctx)
    for n in sizes:
        def fwd(n=n):
            target.forward(ctx[:n] if n <= len(ctx) else (ctx * 2)[:n])
            target.sync()  # on a GPU, time the kernels, not their launch
            target.rollback(len(ctx))
        fwd()
        target_fwd[n] = median_seconds(fwd, reps, PROBE_S)
    target.reset()
    done[key] = dict(target_fwd)
    return target_fwd


def measure_every_core(target, draft, cores):
    """The probe with each side on every core, as the -all modes run (one sequence, fewer sizes)."""
    threads = draft.threads, torch.get_num_threads()
    draft.set_threads(cores)
    target.set_threads(cores)
    try:
        return measure(target, draft, 1, sizes=(1, 2, 8, 16), reps=5)
    finally:
        draft.set_threads(threads[0])
        target.set_threads(threads[1])


def effective_mode(requested, modes):
    """The mode that runs for --mode `requested` when only `modes` are open (split cores open no -all mode, nor does
    a 1-core host): None for auto; a -all mode that is not open runs on the side's own cores, with a warning."""
    if requested == "auto" or requested in modes:
        return None if requested == "auto" else requested
    mode = kind(requested)
    print(f"warning: duodec --mode {requested}: every core is not open to one side here (--cores shared on a host of "
          f"2 or more cores opens it); running --mode {mode}", file=sys.stderr)
    return mode


def make(args, target, draft):
    cfg = Config.from_args(args)
    # called outside the harness (tests, tools): split cores, each side as it is now
    cores = getattr(args, "cores", None) or Cores("split", torch.get_num_threads(), draft.threads,
                                                  len(os.sched_getaffinity(0)))
    options = cfg.options(draft.n_seq)
    target.set_threads(cores.target)
    draft.set_threads(cores.draft)
    draft_step, target_fwd = measure(target, draft, options.max_seqs)
    every = cores.every if cores.shared and cores.every > 1 else None  # split: each side keeps its own cores
    spread = measure_every_core(target, draft, every) if every else None
    auto = cfg.gamma == "auto"
    budget = Budget(cfg.gamma_rule if auto else "fixed", None if auto else cfg.gamma, draft_step, target_fwd,
                    every_core=spread, catch_up=cfg.catch_up)
    forced = effective_mode(cfg.mode or ("auto" if cores.shared else "overlap"), budget.costs)
    modes = Modes(budget, forced=forced)
    worker = (ProcessWorker if cfg.worker == "process" else ThreadWorker)(draft)
    rounds = Rounds(target, worker, (budget, modes), options, Threads(cores.target, cores.draft, every))

    ms = lambda times: {n: round(t * 1e3, 4) for n, t in times.items()}
    settings = {**asdict(cfg), "max_seqs": options.max_seqs, "mode_effective": forced or "auto",
                "modes_open": list(budget.costs), "time_balance_gamma": budget.time_gamma,
                "draft_step_ms": ms(draft_step), "target_forward_ms": ms(target_fwd),
                "every_core_ms": spread and {"draft_step": ms(spread[0])[1], "target_forward": ms(spread[1])}}
    return Method(rounds.generate, settings, close=worker.close, worker=worker)
