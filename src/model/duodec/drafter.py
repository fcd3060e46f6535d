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


def top_two(logits):
    """Per row: (top-1 token, its probability, runner-up token, its probability). Two argmaxes, not a sort:
    this runs at every draft step."""
    logits = np.atleast_2d(logits)
    rows = np.arange(len(logits))
    top = logits.argmax(1)
    best = logits[rows, top]
    rest = logits.copy()
    rest[rows, top] = -np.inf
    alt = rest.argmax(1)
    z = np.exp(logits - best[:, None]).sum(1)
    return list(zip(top.tolist(), (1.0 / z).tolist(), alt.tolist(), (np.exp(logits[rows, alt] - best) / z).tolist()))


NOT_TOP = (1.0, -1, 0.0)  # odds of a token that was not the draft's top-1: no branch point


def top_only(logits):
    """Per row: the top-1 token, with no odds (NOT_TOP's). Without branches nothing reads the odds, and
    top_two's probabilities cost a twentieth of a draft step."""
    return [(t,) + NOT_TOP for t in np.atleast_2d(logits).argmax(1).tolist()]


@dataclass
class Drafts:
    """What one job drafted. seqs[s] starts at absolute position starts[s] of the job's context: the first k
    continue the whole context (the theta rule's sequences), the rest are branches: a predicted outcome of the
    verification (the target's token at an earlier position), continued greedily. odds[s][i]: (top-1
    probability, runner-up token, its probability) where seqs[s][i] was chosen as the top-1 ((1, -1, 0) where it
    was not), for the next job's branch points.
    steps, step_s: the batched decode steps after the first token, and their seconds (the rest of a job's
    time is its fixed cost: catching up with the context, choosing the first tokens)."""
    seqs: list
    starts: list
    k: int
    odds: list
    steps: int = 0
    step_s: float = 0.0
    synced: int = 0  # context tokens the job first had to read (a whole prompt after the prefill)
    branch_s: float = 0.0  # seconds spent pre-drafting outcomes (Drafter.predraft), after the steps
    predrafted: int = 0  # tokens drafted after the outcomes' own tokens
    q: list = None  # q[s][i]: the distribution seqs[s][i] was drawn from (a sampled chain), else None: greedy

    def rows(self, s):
        """Sequence s's draw distributions, one per token (None for a greedy token)."""
        return self.q[s] if self.q else [None] * len(self.seqs[s])

    def continuation(self, context, verified):
        """The drafted tokens that continue `verified` (which agrees with `context` up to where it was
        verified): from the first sequence that agrees with it, its tokens after the end of `verified`, with
        their odds and draw distributions."""
        agree = common_prefix(context, verified)
        for s, (start, seq, odds) in enumerate(zip(self.starts, self.seqs, self.odds)):
            end = len(verified) - start
            if start <= agree and 0 < end < len(seq) and seq[:end] == verified[start:]:
                return seq[end:], odds[end:], self.rows(s)[end:]
        return [], [], []


class Drafter:
    """Owns a llama.cpp `Draft` and the tokens each of its sequences holds; drafts k greedy sequences."""

    def __init__(self, draft):
        self.draft, self.branches, self.synced = draft, [[]], 0

    def reset(self):
        self.draft.clear()
        self.branches = [[]]

    def sync(self, context):
        """Keep the branch that shares most with `context` as sequence 0, feed the rest of the context,
        and return the logits after its last token."""
        best = max(range(len(self.branches)), key=lambda s: common_prefix(self.branches[s], context))
        keep = min(common_prefix(self.branches[best], context), len(context) - 1)
        self.draft.keep_only(best)
        self.draft.rollback(keep)
        self.branches = [list(context)]
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

    def run(self, job, cancel=None, ended=None):
        """Draft sequences continuing `job.context` (a worker.DraftJob), `job.depths[k]` tokens each when k
        sequences are drafted (at most `job.depth`); job.force_k > 0 skips the theta rule and drafts from the
        force_k most likely first tokens. A set `cancel` event cuts the drafting short. Then, while `ended` (the
        target's forward ended) is not set and within `job.until_s`, pre-draft the outcomes `job.branch_at`
        [(position, token)] of the verification (see predraft). `job.odds`: rank each top-1 token against the
        runner-up (for the next job's branch points), else NOT_TOP."""
        t_job = time.perf_counter()
        context, depth, depths = job.context, job.depth, job.depths
        logits = self.sync(context)
        if depth <= 0:
            return Drafts([[]], [len(context)], 1, [[]])
        if job.sample:
            return self.draw(job, logits, cancel)
        firsts, second = self.first_tokens(logits, depth, job.max_seqs, job.force_k)
        k = len(firsts)
        n = max(1, min(depth, depths.get(k, depths[max(depths)])) if depths else depth)
        seqs, starts = [[t] for t in firsts], [len(context)] * k
        pick = top_two if job.odds else top_only
        odds = [[pick(logits)[0][1:]]] + [[NOT_TOP] for _ in seqs[1:]]
        for s in range(1, k):  # sequences with sequence ops, not state copies
            self.draft.fork(0, s, len(context))
        steps, t0 = 0, time.perf_counter()  # the decode steps after the first token, timed apart
        if n > 1:  # decode every sequence's first token (sequence 0's may already be done)
            rows = [(seqs[s][0], s, True) for s in range(k) if s > 0 or second is None]
            last = self.draft.decode(rows) if second is None else np.vstack([second, self.draft.decode(rows)])
            steps += bool(rows)
        for _ in range(n - 1):
            for s, (top, p_top, alt, p_alt) in enumerate(pick(last)):
                seqs[s].append(top)
                odds[s].append((p_top, alt, p_alt))
            if len(seqs[0]) == n or (cancel is not None and cancel.is_set()):
                break
            last = self.draft.decode([(seqs[s][-1], s, True) for s in range(k)])
            steps += 1
        drafts = Drafts(seqs, starts, k, odds, steps, time.perf_counter() - t0, self.synced)
        stop = lambda: any(e is not None and e.is_set() for e in (cancel, ended))
        if job.branch_at and n > 1 and not stop():
            self.predraft(drafts, job, context, lambda step_s: stop() or (
                job.until_s is not None and time.perf_counter() - t_job + step_s > job.until_s))
        self.branches = [(list(context[:st]) + sq)[:self.draft.lengths[s]] for s, (st, sq) in
                         enumerate(zip(drafts.starts, drafts.seqs))]
        return drafts

    def predraft(self, drafts, job, context, late):
        """Draft continuations of the likeliest verification outcomes (rejected at position p, the target's token
        there t, for (p, t) in job.branch_at, each with the draft's own odds of it) into `drafts`, one single-row
        step at a time (batched rows cost several single steps on a CPU), always extending the branch whose next
        token is likeliest to be needed: its outcome's odds times its tokens' top-1 probabilities so far. Each
        branch gets at most len(drafts.seqs[0]) tokens; `late(step_s)` ends it (the forward ended, or another
        step would end after it)."""
        t0, slots = time.perf_counter(), range(drafts.k, self.draft.n_seq)
        live = []  # (-odds of its next token being needed, sequence slot)
        for s, (pos, token, odds) in zip(slots, job.branch_at):
            self.draft.fork(0, s, pos)
            drafts.seqs.append([token])
            drafts.starts.append(pos)
            drafts.odds.append([NOT_TOP])
            live.append((-odds, s))
        step_s, most = 0.0, len(drafts.seqs[0])
        while live and not late(step_s):
            live.sort()
            weight, s = live.pop(0)
            t = time.perf_counter()
            top, p_top, alt, p_alt = top_two(self.draft.decode([(drafts.seqs[s][-1], s, True)]))[0]
            step_s = max(step_s, time.perf_counter() - t)
            drafts.seqs[s].append(top)
            drafts.odds[s].append((p_top, alt, p_alt))
            if len(drafts.seqs[s]) < most:
                live.append((weight * p_top, s))
        drafts.branch_s = time.perf_counter() - t0
        drafts.predrafted = sum(len(sq) - 1 for sq in drafts.seqs[drafts.k:])

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
        self.branches = [(list(context) + seqs[s])[:self.draft.lengths[s]] for s in range(k)]
        return Drafts(seqs, [len(context)] * k, k, [[NOT_TOP] * len(x) for x in seqs], steps,
                      time.perf_counter() - t0 if t0 else 0.0, self.synced, q=q)
