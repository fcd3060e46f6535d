"""PEARL (Liu et al., "Parallel Speculative Decoding with Adaptive Draft Length", ICLR 2025): DuoDecoding's rounds
with the draft on the target's own device. While the target verifies the pending draft, the draft drafts the next
gamma tokens beside it (post-verify); after a rejection the target's forward covers its own token while the draft
drafts from it (pre-verify). A fixed gamma, one sequence, no lookups, the draft in its own process as upstream's
two processes. On the CPU the draft shares the target's cores, as it would share one GPU: both are pinned to
them, each computing on half of them. So a PEARL row beside DuoDecoding's asks whether the CPU draft is the
reason, or running the draft in parallel is."""
import os

import torch

from src.argtypes import positive
from src.backends.hf_draft import HFDraft
from src.model.base import Cores, Method
from src.model.duodec import Budget, Modes, Options, Rounds, Threads, measure
from src.model.duodec.worker import ProcessWorker, pin

DRAFT = "hf"


def add_args(ap):
    ap.add_argument("--gamma", type=positive, default=5,
                    help="pearl: draft tokens per round (fixed, as upstream's --gamma per model pair)")


def target_cores(cores):
    """The cores the target owns on this host: the first `cores.target` (every core when they are shared)."""
    every = sorted(os.sched_getaffinity(0))
    return set(every if cores.shared else every[:cores.target])


def pinned_forward(rounds, cores):
    """PEARL's forward: the rounds of one answer, the calling thread pinned to `cores` (None: as it is) for
    that call only, since other methods' turns share the thread."""
    def forward(prompt_ids, max_new_tokens, sampling, gen):
        before = pin(cores)
        try:
            return rounds.generate(prompt_ids, max_new_tokens, sampling, gen)
        finally:
            pin(before)
    return forward


def make(args, target, draft):
    cores = getattr(args, "cores", None) or Cores("split", torch.get_num_threads(), 1, len(os.sched_getaffinity(0)))
    own = target_cores(cores)
    # both sides compute at once on the target's cores, so each takes half of them (on one core they take turns):
    # a side on all of them would have threads waiting at each barrier for a core the other side holds
    threads = max(1, len(own) // 2)
    hf = HFDraft(draft)
    hf.set_threads(threads)
    target.set_threads(threads)
    draft_step, target_fwd = measure(target, hf, 1)
    budget = Budget("fixed", args.gamma, draft_step, target_fwd)
    worker = ProcessWorker(hf, own)
    rounds = Rounds(target, worker, (budget, Modes(budget, forced="overlap")), Options(max_seqs=1, fit=False),
                    Threads(threads, threads))
    forward = pinned_forward(rounds, own)
    ms = lambda times: {n: round(t * 1e3, 4) for n, t in times.items()}
    return Method(forward, {"gamma": args.gamma, "draft_backend": "hf", "draft_device": str(draft.device),
                            "shared_cores": sorted(own), "draft_step_ms": ms(draft_step),
                            "target_forward_ms": ms(target_fwd)},
                  close=worker.close, worker=worker)
