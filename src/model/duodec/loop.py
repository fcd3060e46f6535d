"""DuoDecoding's rounds. Each round the target runs one forward over the last verified token plus the
pending draft (the sequence chosen last round, only its first token verified) while the worker drafts
the next sequences from the end of that pending draft. Then:
  - the pending draft is verified as a chain;
  - if all of it holds, the first tokens of the new sequences are tried at the next position, and the
    accepted sequence becomes the new pending draft (post-verify: the pipeline stays full);
  - otherwise the target's own token is appended; the new drafts are dropped, unless a branch (the draft's
    runner-up token put where the pending draft failed, drafted alongside, --branches) starts with it.
Round 1 overlaps the prefill (in the overlapped mode): the draft proposes one token, ready when the prompt's
forward ends.
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
from src.model.duodec.drafter import Drafts
from src.model.duodec.policy import branch_points
from src.model.duodec.worker import DraftJob
from src.model.ngram import NgramIndex
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
    mode_threads: dict = field(default_factory=dict)  # mode -> (target's threads, draft's or None)
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

    def ran_on(self, mode, threads):
        """Note the threads each side had in a round of `mode`."""
        self.mode_threads[mode] = threads

    def as_dict(self, budget):
        wall = time.perf_counter() - self.start
        mean = lambda xs, scale=1.0: round(scale * float(np.mean(xs)), 4) if xs else 0.0
        most = lambda side: max((t[side] for t in self.mode_threads.values() if t[side]), default=None)
        return {"k_hist": {str(k): v for k, v in sorted(self.ks.items())}, "gamma": round(float(np.mean(self.gammas)), 2),
                "acceptance": round(budget.alpha(), 4), "tree_rounds": self.tree_rounds,
                "threads": {"target": most(0), "draft": most(1)},
                "mode_threads": {m: {"target": t, "draft": d} for m, (t, d) in self.mode_threads.items()},
                "verify_ms": mean(self.verify_s, 1e3), "verify_tokens": round(mean(self.verify_tokens), 2),
                "free_rounds": self.free_rounds, "free_accepted": self.free_accepted, "branch_hits": self.branch_hits,
                "target_idle_share": round(self.target_idle / wall, 4) if wall else 0.0,
                "catch_up_idle_share": round(self.catch_up_idle / wall, 4) if wall else 0.0,
                "draft_idle_share": round(max(0.0, 1 - self.draft_busy / wall), 4) if wall else 0.0}


@dataclass(frozen=True)
class Threads:
    """Each side's threads: its own cores (`target`, `draft`), and every core (`every`) for a side that runs alone
    in an -all mode (None: no such mode is open, as under split cores)."""
    target: int
    draft: int
    every: int = None

    def of(self, mode):
        """(target's, draft's) threads in a mode; the draft's is None where no draft job runs."""
        spread = mode.endswith("-all")
        t, d = (self.every, self.every) if spread else (self.target, self.draft)
        return t, None if mode.startswith("none") else d


@dataclass(kw_only=True)
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


def catch_up(worker, stats, seq, room, budget, opt, n, threads=None):
    """With nothing pending, wait for n draft tokens so the next forward verifies more than one token: one
    sequence, or (tree) k sequences by the theta rule. Returns the drafts and the job's seconds."""
    n = min(n, room)
    worker.submit(DraftJob(context=seq, depth=n, max_seqs=opt.max_seqs if opt.tree else 1, depths=budget.depths(n),
                           force_k=opt.force_k if opt.tree else 0, odds=opt.branches > 0, threads=threads))
    drafts, draft_s = stats.wait(worker, catching_up=True)
    budget.observe_job(drafts, draft_s)
    return drafts, draft_s


def free_candidates(index, seq, n):
    """Up to n tokens that cost no draft time: what followed the first earlier occurrence of the last n-gram
    (`index`: whole n-gram matches only, since shorter ones, which PLD backs off to, are right too rarely
    to be worth a forward ahead of the draft's tokens)."""
    return index.lookup(seq, n) if index and n > 0 else []


NO_DRAFTS = Drafts([[]], [0], 1, [[]])


@dataclass
class Answer:
    """What the rounds have made: the sequence (prompt and verified tokens), the new tokens, each round's gain,
    and the pending draft (drafted tokens only the first of which may be verified) with the draft's odds."""
    seq: list
    new: list = field(default_factory=list)
    accepts: list = field(default_factory=list)
    pending: list = field(default_factory=list)
    odds: list = field(default_factory=list)
    done: bool = False


@dataclass
class Plan:
    """One round: the chain the forward verifies (or, after a catch-up of k sequences, the tree of them),
    whether it was looked up rather than drafted, and the job the draft runs meanwhile (None: nothing does)."""
    chain: list
    odds: list
    tree: list = None
    looked_up: bool = False
    job: DraftJob = None
    caught_s: float = 0.0  # seconds the draft drafted before the forward (a catch-up)


def plan_round(target, ans, mode, room, prefill, worker, budget, opt, stats, index, draft_threads):
    """What this round verifies, and what the draft does meanwhile (or first, if sequential)."""
    gamma = budget.gamma()
    stats.gammas.append(gamma)
    p = Plan(ans.pending, ans.odds)
    if not p.chain and room > 0:
        p.chain, p.odds = free_candidates(index, ans.seq, min(gamma, room)), []
        p.looked_up = bool(p.chain)
        stats.free_rounds += p.looked_up
    wait_for = {"overlap": opt.catch_up, "sequential": gamma, "none": 0}[mode]
    if wait_for and not p.chain and not prefill and room > 0:
        caught, p.caught_s = catch_up(worker, stats, ans.seq, room, budget, opt, wait_for, draft_threads)
        p.chain, p.odds = caught.seqs[0], caught.odds[0]
        p.tree = caught.seqs[:caught.k] if caught.k > 1 else None
    if mode == "overlap":
        # the draft continues the chain (sequence 0 of a tree) while the target verifies it, and branches
        # where the chain is likeliest to fail
        left = room - len(p.chain)
        fed = len(ans.seq) - target.length + len(p.chain)
        depth = 1 if prefill else min(gamma, left, budget.fits(fed) if opt.fit else left)
        p.job = DraftJob(context=ans.seq + p.chain, depth=depth, max_seqs=opt.max_seqs if depth > 1 else 1,
                         depths=budget.depths(gamma), force_k=opt.force_k,
                         branch_at=branch_points(p.odds, len(ans.seq), opt.branches) if depth > 1 else [],
                         odds=opt.branches > 0, threads=draft_threads)
    return p


def verify_round(target, seq, p, sampling, gen, stats, prefill):
    """The target's one forward: the plan's chain, or its tree."""
    t0 = time.perf_counter()
    if p.tree:
        stats.tree_rounds += 1
        stats.ks[len(p.tree)] += 1
        v = check_tree(target, seq, p.tree, sampling, gen)
    else:
        v = check_chain(target, seq, p.chain, sampling, gen)
    if not prefill:
        target.sync()
        stats.verify_s.append(time.perf_counter() - t0)
        stats.verify_tokens.append(v.fed)
    return v


def collect_drafts(worker, v, budget, stats, prefill):
    """The job the draft ran during the forward (cut short if the chain failed: it continues a rejected token)."""
    if not v.held:
        worker.stop_early()
    drafts, draft_s = stats.wait(worker)
    if not prefill:
        budget.observe_job(drafts, draft_s)
    return drafts, draft_s


def accept_round(v, drafts, p, budget, stats, gen):
    """The tokens the round gained: the accepted chain, then the new drafts' first token if the chain held and
    one of them is accepted at the next position (post-verify), else the target's own token."""
    gained, nxt = list(v.gained), v.nxt
    if p.looked_up:  # looked-up tokens say nothing of the draft's acceptance
        stats.free_accepted += len(gained)
    else:
        budget.record(len(gained), len(gained) + (not v.at_leaf))  # tested: the accepted, then a rejection
    if v.held and drafts.seqs[0]:
        stats.ks[drafts.k] += 1
        hit, nxt = accept_candidates(v.p_next, [s[0] for s in drafts.seqs[:drafts.k]], gen)
        budget.record(hit is not None, 1)
    return gained + [nxt]


def advance(ans, gained, drafts, context, stop_ids, stats, held):
    """Append the gained tokens; the next pending draft is what the draft holds beyond them: a sequence that
    continues the accepted first token, or the branch that put the target's own token where the chain failed."""
    ans.seq += gained
    ans.new += gained
    ans.accepts.append(len(gained))
    ans.done = stopped(gained, stop_ids)
    ans.pending, ans.odds = drafts.continuation(context, ans.seq)
    stats.branch_hits += bool(ans.pending) and not held


def generate(target, worker, prompt_ids, max_new_tokens, sampling, gen, budget, opt, modes, threads):
    """The rounds of one answer. `modes` picks each round's way of running (policy.Modes): overlap (the draft
    drafts while the target verifies), sequential (wait for gamma draft tokens, then verify with nothing
    running beside) or none (verify free candidates, if any). Round 1 is the prefill. `threads` (Threads): each
    side's own cores, or every core in its turn in the -all modes, the prefill's included."""
    clock, stats, ans = Clock(), RoundStats(), Answer(list(prompt_ids))
    target.reset()
    budget.start_question()
    modes.start_question()
    index = NgramIndex(opt.lookup_ngram, opt.lookup_ngram) if opt.lookup_ngram else None
    prefill = True
    while len(ans.new) < max_new_tokens and not ans.done:
        t0 = time.perf_counter()
        # the prefill runs in the mode that would run next: only the overlapped one drafts beside it, so a
        # long prompt's draft prefill, on the draft's core, does not hold up the first token otherwise
        mode = modes.current if prefill else modes.choose()
        budget.run_in(mode)
        kind = mode.removesuffix("-all")
        worker.spin(kind == "overlap")  # waiting for a message spins only where the other side answers soon
        target_threads, draft_threads = threads.of(mode)
        target.set_threads(target_threads)
        stats.ran_on(mode, (target_threads, draft_threads))
        room = max_new_tokens - len(ans.new) - 1
        p = plan_round(target, ans, kind, room, prefill, worker, budget, opt, stats, index, draft_threads)
        if p.job:
            worker.submit(p.job)
        v = verify_round(target, ans.seq, p, sampling, gen, stats, prefill)
        drafts, beside_s = collect_drafts(worker, v, budget, stats, prefill) if p.job else (NO_DRAFTS, 0.0)
        gained = accept_round(v, drafts, p, budget, stats, gen)
        clock.first_token()
        advance(ans, gained, drafts, p.job.context if p.job else [], target.stop_ids, stats, v.held)
        if not prefill:
            round_s, verify_s = time.perf_counter() - t0, stats.verify_s[-1]
            budget.observe(v.fed, verify_s, 0.0, 0, 0.0)  # the forward; the jobs were observed as they ended
            # the rest of the round: what neither side's measured work explains (Python, messages)
            budget.observe_rest(round_s - p.caught_s - max(verify_s, beside_s))
            modes.observe(mode, len(gained), round_s)
        prefill = False
    return finish(ans.new, target.stop_ids, max_new_tokens, ans.accepts, clock,
                  {**stats.as_dict(budget), **modes.as_dict()})
