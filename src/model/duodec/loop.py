"""DuoDecoding's rounds. Each round the target runs one forward over the last verified token plus the
pending draft (the sequence chosen last round, only its first token verified) while the worker drafts
the next sequences from the end of that pending draft. Then:
  - the pending draft is verified as a chain;
  - if all of it holds, the first tokens of the new sequences are tried at the next position, and the
    accepted sequence becomes the new pending draft (post-verify: the pipeline stays full);
  - otherwise the target's own token is appended; the new drafts are dropped, unless a branch (the draft's
    runner-up token put where the pending draft failed, drafted alongside, --branches) starts with it.
Round 1 overlaps the prefill: the draft proposes one token, ready when the prompt's forward ends.
A round drafts gamma tokens, or fewer where they would not end within its forward (a forward over one token
after a rejection is shorter than gamma draft steps), so the target does not wait for them (--no-fit: gamma).
When nothing is pending (after a rejection, a refused first token, or the prefill), the next forward
would verify nothing new. Free candidates come first: the tokens that followed an earlier occurrence of
the last n tokens (prompt lookup) cost no draft time, so the target verifies them at once while the
draft continues them. Without a match the target either runs its pre-verify forward over its own token
while the draft drafts from it (--catch-up 0, the paper's), or waits for --catch-up draft tokens: one
sequence (--verify first), or k sequences verified together as a tree (--verify tree).
Every candidate is deterministic (greedy draft tokens, top-k first tokens, branches, looked-up tokens:
functions of the verified tokens), so the deterministic-candidate rule keeps sampling exact.
"""
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from src.model.base import Clock, chain_step, finish, stopped, tree_step
from src.model.duodec.policy import branch_points
from src.model.duodec.worker import DraftJob
from src.model.pld import NgramIndex
from src.verify import accept_candidates


def flatten(seqs):
    """k sequences with distinct first tokens as one tree under the last verified token:
    (tokens, parents), sequence 0 first, so its nodes are 0 .. len(seqs[0]) - 1."""
    tokens, parents = [], []
    for s in seqs:
        for j, t in enumerate(s):
            parents.append(-1 if j == 0 else len(tokens) - 1)
            tokens.append(t)
    return tokens, parents


@dataclass
class Verdict:
    """One round's verification: the accepted draft tokens, whether the pending draft held to its end,
    whether the test stopped at a branch's end (no rejection), the distribution after the accepted
    tokens, the target's next token, and how many tokens the forward fed."""
    gained: list
    held: bool
    at_leaf: bool
    p_next: object
    nxt: int
    fed: int


def check_chain(target, seq, pending, sampling, gen):
    """One forward over what the target has not seen of seq (the prompt, on round 1), then the pending
    draft, verified as a chain."""
    fed = len(seq) - target.length + len(pending)
    n, nxt, p_rows = chain_step(target, seq, pending, sampling, gen)
    held = n == len(pending)
    return Verdict(pending[:n], held, held, p_rows[n], nxt, fed)


def check_tree(target, seq, seqs, sampling, gen):
    """One forward over k sequences hung under seq[-1]; `held` means sequence 0 was accepted whole."""
    tokens, parents = flatten(seqs)
    path, nxt, probs = tree_step(target, seq, tokens, parents, sampling, gen)
    held = path == list(range(len(seqs[0])))
    at_leaf = bool(path) and (path[-1] + 1 == len(tokens) or parents[path[-1] + 1] == -1)
    return Verdict([tokens[i] for i in path], held, at_leaf, probs[path[-1] + 1 if path else 0], nxt, 1 + len(tokens))


@dataclass
class RoundStats:
    """What a question's rounds measured, kept apart from the algorithm's lines."""
    ks: Counter = field(default_factory=Counter)
    gammas: list = field(default_factory=list)
    verify_s: list = field(default_factory=list)  # the target's work per round after round 1
    verify_tokens: list = field(default_factory=list)
    target_idle: float = 0.0
    catch_up_idle: float = 0.0  # the part of target_idle spent waiting for catch-up drafts
    draft_busy: float = 0.0
    tree_rounds: int = 0
    free_rounds: int = 0
    free_accepted: int = 0
    branch_hits: int = 0  # rejections answered by a ready branch instead of a catch-up
    start: float = field(default_factory=time.perf_counter)

    def wait(self, worker, catching_up=False):
        """The worker's sequences and its seconds drafting them; the target is idle meanwhile."""
        t0 = time.perf_counter()
        seqs, drafting = worker.result()
        idle = time.perf_counter() - t0
        self.target_idle += idle
        self.catch_up_idle += idle if catching_up else 0.0
        self.draft_busy += drafting
        return seqs, drafting

    def as_dict(self, budget):
        wall = time.perf_counter() - self.start
        mean = lambda xs, scale=1.0: round(scale * float(np.mean(xs)), 4) if xs else 0.0
        return {"k_hist": {str(k): v for k, v in sorted(self.ks.items())}, "gamma": round(float(np.mean(self.gammas)), 2),
                "acceptance": round(budget.alpha(), 4), "tree_rounds": self.tree_rounds,
                "draft_step_ms": round(budget.step * 1e3, 4), "draft_setup_ms": round(budget.setup * 1e3, 4),
                "forward_scale": round(budget.fwd_scale, 3),
                "verify_ms": mean(self.verify_s, 1e3), "verify_tokens": round(mean(self.verify_tokens), 2),
                "free_rounds": self.free_rounds, "free_accepted": self.free_accepted, "branch_hits": self.branch_hits,
                "target_idle_share": round(self.target_idle / wall, 4) if wall else 0.0,
                "catch_up_idle_share": round(self.catch_up_idle / wall, 4) if wall else 0.0,
                "draft_idle_share": round(max(0.0, 1 - self.draft_busy / wall), 4) if wall else 0.0}


@dataclass
class Options:
    """The method's choices (see add_args): most theta-rule sequences, forced k, catch-up tokens, catch-up as
    a tree, n-gram for free candidates, branch sequences at the pending draft's unsure positions."""
    max_seqs: int = 1
    force_k: int = 0
    catch_up: int = 0
    tree: bool = False
    lookup_ngram: int = 0
    branches: int = 0
    fit: bool = True


def catch_up(worker, stats, seq, room, budget, opt):
    """With nothing pending, wait for draft tokens so the next forward verifies more than one token: one
    sequence, or (tree) k sequences by the theta rule."""
    n = min(opt.catch_up, room)
    worker.submit(DraftJob(seq, n, opt.max_seqs if opt.tree else 1, budget.depths(n), opt.force_k if opt.tree else 0,
                           odds=opt.branches > 0))
    return stats.wait(worker, catching_up=True)[0]


def free_candidates(index, seq, n):
    """Up to n tokens that cost no draft time: what followed the first earlier occurrence of the last n-gram
    (`index`: whole n-gram matches only, since shorter ones, which PLD backs off to, are right too rarely
    to be worth a forward ahead of the draft's tokens)."""
    return index.lookup(seq, n) if index and n > 0 else []


def generate(target, worker, prompt_ids, max_new_tokens, sampling, gen, budget, opt):
    clock, stats = Clock(), RoundStats()
    target.reset()
    budget.start_question()
    seq, new, accepts = list(prompt_ids), [], []
    pending, odds = [], []  # draft tokens to verify next, and the draft's odds for each
    first_round = True
    index = NgramIndex(opt.lookup_ngram, opt.lookup_ngram) if opt.lookup_ngram else None
    done = False
    while len(new) < max_new_tokens and not done:
        room = max_new_tokens - len(new) - 1
        gamma = budget.gamma()
        stats.gammas.append(gamma)
        caught, free = None, []
        if not pending and room > 0:
            free = pending = free_candidates(index, seq, min(gamma, room))
            odds = []
            stats.free_rounds += bool(free)
        if opt.catch_up and not pending and not first_round and room > 0:
            caught = catch_up(worker, stats, seq, room, budget, opt)
            pending, odds = caught.seqs[0], caught.odds[0]
        room -= len(pending)
        fed = len(seq) - target.length + len(pending)
        depth = 1 if first_round else min(gamma, room, budget.fits(fed) if opt.fit else room)
        # the draft continues the pending draft (sequence 0 of a tree) while the target verifies it, and
        # branches where the pending draft is likeliest to fail
        context = seq + pending
        worker.submit(DraftJob(context, depth, opt.max_seqs if depth > 1 else 1, budget.depths(gamma), opt.force_k,
                               branch_points(odds, len(seq), opt.branches) if depth > 1 else [], opt.branches > 0))
        t_verify = time.perf_counter()
        if caught is not None and caught.k > 1:
            stats.tree_rounds += 1
            stats.ks[caught.k] += 1
            v = check_tree(target, seq, caught.seqs[:caught.k], sampling, gen)
        else:
            v = check_chain(target, seq, pending, sampling, gen)
        if not first_round:
            target.sync()
            stats.verify_s.append(time.perf_counter() - t_verify)
            stats.verify_tokens.append(v.fed)
        if not v.held:
            worker.stop_early()  # its drafts continue a rejected token: cut them short
        drafts, draft_s = stats.wait(worker)
        if not first_round:
            budget.observe(v.fed, stats.verify_s[-1], draft_s, drafts.steps, drafts.step_s, len(drafts.seqs))
        first_round = False
        gained, nxt = v.gained, v.nxt
        if free:  # looked-up tokens say nothing of the draft's acceptance
            stats.free_accepted += len(gained)
        else:
            budget.record(len(gained), len(gained) + (not v.at_leaf))  # tested: the accepted, then a rejection
        if v.held and drafts.seqs[0]:
            # the pending draft held: try the new sequences' first tokens at the next position
            stats.ks[drafts.k] += 1
            hit, nxt = accept_candidates(v.p_next, [s[0] for s in drafts.seqs[:drafts.k]], gen)
            budget.record(hit is not None, 1)
        gained.append(nxt)
        clock.first_token()
        seq += gained
        new += gained
        accepts.append(len(gained))
        done = stopped(gained, target.stop_ids)
        # what the draft holds beyond the verified tokens: a sequence that continues the accepted first
        # token, or the branch that put the target's own token where the pending draft failed
        pending, odds = drafts.continuation(context, seq)
        stats.branch_hits += bool(pending) and not v.held
    return finish(new, target.stop_ids, max_new_tokens, accepts, clock, stats.as_dict(budget))
