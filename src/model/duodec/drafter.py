"""The draft side of DuoDecoding: a drafter that drafts k greedy sequences (the theta rule's, rules.py) in one
`llama_decode` per step (unified KV cache, sequence ids), not one after another; or, under sampling, a chain or k
sequences drawn from the draft's distribution, with the rows they were drawn from (for the rejection rules)."""
import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import softmax

from src.model.base import common_prefix
from src.model.duodec.rules import choose_first_tokens
from src.verify import distributions, sample


@dataclass
class Drafts:
    """What one job drafted: k sequences, seqs[s] starting at absolute position starts[s] of the job's context.
    steps, step_s: the batched decode steps after the first token, and their seconds (the rest of a job's
    time is its fixed cost: catching up with the context, choosing the first tokens)."""
    seqs: list
    starts: list
    k: int
    steps: int = 0
    step_s: float = 0.0
    synced: int = 0  # context tokens the job first had to read (a whole prompt after the prefill)
    q: list = None  # q[s][i]: the distribution seqs[s][i] was drawn from (a sampled chain), else None: greedy

    def rows(self, s):
        """Sequence s's draw distributions, one per token (None for a greedy token)."""
        return self.q[s] if self.q else [None] * len(self.seqs[s])

    def continuation(self, context, verified):
        """The drafted tokens that continue `verified` (which agrees with `context` up to where it was
        verified): from the first sequence that agrees with it, its tokens after the end of `verified`, with
        their draw distributions."""
        agree = common_prefix(context, verified)
        for s, (start, seq) in enumerate(zip(self.starts, self.seqs)):
            end = len(verified) - start
            if start <= agree and 0 < end < len(seq) and seq[:end] == verified[start:]:
                return seq[end:], self.rows(s)[end:]
        return [], []


class Drafter:
    """Owns a llama.cpp `Draft` and the tokens each of its sequences holds; drafts k greedy sequences."""

    def __init__(self, draft):
        self.draft, self.held, self.synced = draft, [[]], 0

    def reset(self):
        self.draft.clear()
        self.held = [[]]

    def sync(self, context):
        """Keep the sequence that shares most with `context` as sequence 0, feed the rest of the context,
        and return the logits after its last token."""
        best = max(range(len(self.held)), key=lambda s: common_prefix(self.held[s], context))
        keep = min(common_prefix(self.held[best], context), len(context) - 1)
        self.draft.keep_only(best)
        self.draft.rollback(keep)
        self.held = [list(context)]
        self.synced = len(context) - keep
        return self.draft.eval(context[keep:])

    def first_tokens(self, logits, depth, max_seqs, force_k):
        """The sequences' first tokens, and the logits after the top-1 when the theta rule needed them."""
        if force_k > 1:
            return [int(t) for t in np.argsort(-softmax(logits), kind="stable")[:force_k]], None
        if max_seqs > 1 and depth > 1:
            p1 = softmax(logits)
            second = self.draft.eval([int(p1.argmax())])  # theta needs it; it is also sequence 0's next step
            return choose_first_tokens(p1, float(softmax(second).max()), max_seqs), second
        return [int(logits.argmax())], None

    def run(self, job, cancel=None):
        """Draft sequences continuing `job.context` (a worker.DraftJob), `job.depths[k]` tokens each when k
        sequences are drafted (at most `job.depth`); job.force_k > 0 skips the theta rule and drafts from the
        force_k most likely first tokens. A set `cancel` event cuts the drafting short."""
        context, depth, depths = job.context, job.depth, job.depths
        logits = self.sync(context)
        if depth <= 0:
            return Drafts([[]], [len(context)], 1)
        if job.sample:
            return self.draw(job, logits, cancel)
        firsts, second = self.first_tokens(logits, depth, job.max_seqs, job.force_k)
        k = len(firsts)
        n = max(1, min(depth, depths.get(k, depths[max(depths)])) if depths else depth)
        seqs = [[t] for t in firsts]
        for s in range(1, k):  # sequences with sequence ops, not state copies
            self.draft.fork(0, s, len(context))
        steps, t0 = 0, time.perf_counter()  # the decode steps after the first token, timed apart
        if n > 1:  # decode every sequence's first token (sequence 0's may already be done)
            rows = [(seqs[s][0], s, True) for s in range(k) if s > 0 or second is None]
            last = self.draft.decode(rows) if second is None else np.vstack([second, self.draft.decode(rows)])
            steps += bool(rows)
        for _ in range(n - 1):
            for s, top in enumerate(np.atleast_2d(last).argmax(1).tolist()):
                seqs[s].append(top)
            if len(seqs[0]) == n or (cancel is not None and cancel.is_set()):
                break
            last = self.draft.decode([(seqs[s][-1], s, True) for s in range(k)])
            steps += 1
        self.held = [(list(context) + sq)[:self.draft.lengths[s]] for s, sq in enumerate(seqs)]
        return Drafts(seqs, [len(context)] * k, k, steps, time.perf_counter() - t0, self.synced)

    def draw(self, job, logits, cancel=None):
        """Sequences drawn from the draft's distribution after temperature, top-k and top-p (job.sample: those
        three and a seed), as SpS draws: one chain, or, where the theta rule finds the draft unsure of its first
        token (job.max_seqs > 1), k sequences whose first tokens are drawn without replacement. Each token goes
        back with the row it was drawn from (given its sequence's earlier tokens and, for a first token, the
        earlier first tokens), since the rejection rules need the whole distribution."""
        temperature, top_k, top_p, seed = job.sample
        gen = torch.Generator().manual_seed(seed)
        rows_of = lambda x: distributions(torch.from_numpy(np.atleast_2d(np.asarray(x, dtype=np.float32))),
                                          temperature, top_k, top_p)
        context, k = job.context, 1
        if job.max_seqs > 1 and job.depth > 1:
            firsts, second = self.first_tokens(logits, job.depth, job.max_seqs, 0)
            k = len(firsts)
            if second is not None:  # the theta rule fed sequence 0 its top-1; the draws start from the context
                self.draft.rollback(len(context), 0)
        seqs, q, left = [], [], rows_of(logits)[0]
        while len(seqs) < k and left is not None:
            seqs.append([sample(left, gen)])
            q.append([left.numpy()])
            left = left.clone()
            left[seqs[-1][0]] = 0
            left = left / left.sum() if left.sum() > 0 else None
        k = len(seqs)
        n = max(1, min(job.depth, job.depths.get(k, job.depths[max(job.depths)])) if job.depths else job.depth)
        for s in range(1, k):
            self.draft.fork(0, s, len(context))
        steps, t0 = 0, None
        while len(seqs[0]) < n and not (cancel is not None and cancel.is_set()):
            t0 = t0 or time.perf_counter()  # the decode steps after the first token, timed apart
            last = self.draft.decode([(seqs[s][-1], s, True) for s in range(k)])
            steps += 1
            for s, row in enumerate(rows_of(last)):
                seqs[s].append(sample(row, gen))
                q[s].append(row.numpy())
        self.held = [(list(context) + seqs[s])[:self.draft.lengths[s]] for s in range(k)]
        return Drafts(seqs, [len(context)] * k, k, steps, time.perf_counter() - t0 if t0 else 0.0, self.synced, q=q)
