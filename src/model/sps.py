"""Speculative sampling (Leviathan et al.; Chen et al.): a small draft proposes gamma tokens, the target
verifies them in one forward. The draft is an HF model on the target's device (as upstream), or a
GGUF run by llama.cpp on the CPU, one after the other (DuoDecoding without the overlap)."""
import numpy as np
import torch

from src.argtypes import positive
from src.backends.target import Target
from src.model.base import Method, common_prefix, speculative_loop
from src.verify import distributions, sample

DRAFT = "any"


def add_args(ap):
    ap.add_argument("--gamma", type=positive, default=5, help="draft tokens per round")


class DraftRunner:
    """Feeds one draft (HF `Target` or llama.cpp `Draft`) and remembers which tokens its cache holds."""

    def __init__(self, draft, device):
        self.draft, self.device, self.cached = draft, device, []
        self.gguf = not isinstance(draft, Target)  # else a llama.cpp Draft (not imported: HF drafts need no llama.cpp)

    def reset(self):
        self.cached = []
        if self.gguf:
            self.draft.clear()
        else:
            self.draft.reset()

    def feed(self, tokens):
        if self.gguf:
            logits = torch.from_numpy(np.asarray(self.draft.eval(tokens)))
        else:
            logits = self.draft.forward(tokens)[-1]
        self.cached += list(tokens)
        return logits.to(self.device)

    def sync(self, seq):
        """Roll the draft back to its longest prefix in common with seq; return the tokens it still needs."""
        keep = min(common_prefix(self.cached, seq), len(seq) - 1)
        self.draft.rollback(keep)
        self.cached = self.cached[:keep]
        return seq[keep:]


def propose_sampled(runner, seq, gamma, sampling, gen):
    """gamma tokens sampled from the draft, with the distributions they were sampled from (None under
    greedy decoding: the drafts are then deterministic candidates)."""
    logits = runner.feed(runner.sync(seq))
    tokens, q_rows = [], []
    for i in range(gamma):
        q = distributions(logits[None], sampling.temperature, sampling.top_k, sampling.top_p)[0]
        tokens.append(sample(q, gen))
        q_rows.append(q)
        if i < gamma - 1:
            logits = runner.feed([tokens[-1]])
    return tokens, (None if sampling.greedy else torch.stack(q_rows))


def make(args, target, draft):
    gamma = args.gamma
    runner = DraftRunner(draft, target.device)

    def forward(prompt_ids, max_new_tokens, sampling, gen):
        runner.reset()
        return speculative_loop(target, prompt_ids, max_new_tokens, sampling, gen,
                                lambda seq, budget: propose_sampled(runner, seq, min(gamma, budget), sampling, gen))

    return Method(forward, {"gamma": gamma, "draft_backend": "llama.cpp" if runner.gguf else "hf"})
