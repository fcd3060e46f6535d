"""DuoDecoding's rounds. Each round the target runs one forward over the last verified token plus the
pending draft (the sequence chosen last round, only its first token verified) while the worker drafts
the next sequences from the end of that pending draft. Then:
  - the pending draft is verified as a chain;
  - if all of it holds, the first tokens of the new sequences are tried at the next position, and the
    accepted sequence becomes the new pending draft (post-verify: the pipeline stays full);
  - otherwise the target's own token is appended and the new drafts are dropped (pre-verify).
Round 1 overlaps the prefill: the draft proposes one token, ready when the prompt's forward ends.
When nothing is pending (after a rejection, a refused first token, or the prefill), the next forward
would verify nothing new, so it first waits for --catch-up draft tokens: one sequence (--verify first),
or k sequences verified together as a tree (--verify tree).
Every candidate is deterministic (greedy draft tokens, top-k first tokens), so the
deterministic-candidate rule keeps sampling exact.
"""
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from src.model.base import Clock, chain_step, finish, tree_step
from src.model.duodec.worker import DraftJob
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
    draft_busy: float = 0.0
    tree_rounds: int = 0
    start: float = field(default_factory=time.perf_counter)

    def wait(self, worker):
        """The worker's sequences; the target is idle meanwhile."""
        t0 = time.perf_counter()
        seqs, drafting = worker.result()
        self.target_idle += time.perf_counter() - t0
        self.draft_busy += drafting
        return seqs

    def as_dict(self, budget):
        wall = time.perf_counter() - self.start
        mean = lambda xs, scale=1.0: round(scale * float(np.mean(xs)), 4) if xs else 0.0
        return {"k_hist": {str(k): v for k, v in sorted(self.ks.items())}, "gamma": round(float(np.mean(self.gammas)), 2),
                "acceptance": round(budget.alpha(), 4), "tree_rounds": self.tree_rounds,
                "verify_ms": mean(self.verify_s, 1e3), "verify_tokens": round(mean(self.verify_tokens), 2),
                "target_idle_share": round(self.target_idle / wall, 4) if wall else 0.0,
                "draft_idle_share": round(max(0.0, 1 - self.draft_busy / wall), 4) if wall else 0.0}


def catch_up(worker, stats, seq, room, n, budget, max_seqs, force_k, tree):
    """With nothing pending, wait for n draft tokens so the next forward verifies more than one token:
    one sequence, or (tree) k sequences by the theta rule."""
    worker.submit(DraftJob(seq, min(n, room), max_seqs if tree else 1, budget.depths(n), force_k if tree else 0))
    return stats.wait(worker)


def generate(target, worker, prompt_ids, max_new_tokens, sampling, gen, budget, max_seqs, force_k=0,
             catch_up_tokens=0, tree=False):
    clock, stats = Clock(), RoundStats()
    target.reset()
    budget.start_question()
    eos = target.eos_token_id
    seq, pending, new, accepts = list(prompt_ids), [], [], []
    first_round = True
    while len(new) < max_new_tokens and eos not in new:
        room = max_new_tokens - len(new) - 1
        caught = None
        if catch_up_tokens and not pending and not first_round and room > 0:
            caught = catch_up(worker, stats, seq, room, catch_up_tokens, budget, max_seqs, force_k, tree)
            pending = caught[0]
        room -= len(pending)
        gamma = budget.gamma()
        stats.gammas.append(gamma)
        depth = 1 if first_round else min(gamma, room)
        # the draft continues the pending draft (sequence 0 of a tree) while the target verifies it
        worker.submit(DraftJob(seq + pending, depth, max_seqs if depth > 1 else 1, budget.depths(gamma), force_k))
        t_verify = time.perf_counter()
        if caught is not None and len(caught) > 1:
            stats.tree_rounds += 1
            stats.ks[len(caught)] += 1
            v = check_tree(target, seq, caught, sampling, gen)
        else:
            v = check_chain(target, seq, pending, sampling, gen)
        if not first_round:
            target.sync()
            stats.verify_s.append(time.perf_counter() - t_verify)
            stats.verify_tokens.append(v.fed)
        if not v.held:
            worker.stop_early()  # its drafts continue a rejected token: cut them short
        seqs = stats.wait(worker)
        first_round = False
        gained, nxt = v.gained, v.nxt
        budget.record(len(gained), len(gained) + (not v.at_leaf))  # tokens tested: the accepted, then a rejection
        pending = []
        if v.held and seqs[0]:
            # the pending draft held: try the new sequences' first tokens at the next position
            stats.ks[len(seqs)] += 1
            hit, nxt = accept_candidates(v.p_next, [s[0] for s in seqs], gen)
            budget.record(hit is not None, 1)
            pending = seqs[hit][1:] if hit is not None else []
        gained.append(nxt)
        clock.first_token()
        seq += gained
        new += gained
        accepts.append(len(gained))
    return finish(new, eos, max_new_tokens, accepts, clock, stats.as_dict(budget))
