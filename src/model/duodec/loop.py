"""DuoDecoding's rounds. Each round the target verifies the pending draft (post-verify; with nothing pending, its
own token or looked-up tokens: pre-verify) while the worker drafts on from the pending draft's end. A draft that
continues what the target kept becomes the next pending draft. --mode auto may run the rounds in turns instead
(sequential), or the target alone. Drawn draft tokens (sampling) are tested by the rejection rule, every other candidate by the
deterministic-candidate rule, each position by its own, so the output is the target's distribution."""
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from src.model.base import Clock, chain_step, common_prefix, finish, stopped
from src.model.duodec.drafter import Drafts
from src.model.duodec.policy import LOOKUP_MOST
from src.model.duodec.rules import kind, on_every_core
from src.model.duodec.stats import TurnStats
from src.model.duodec.worker import DraftJob
from src.model.ngram import NgramIndex
from src.verify import accept_siblings, uniform


@dataclass
class Verdict:
    """One round's verification: the accepted draft tokens, whether the pending draft held to its end, the
    distribution after the accepted tokens, the target's next token, and how many tokens the forward fed."""
    gained: list
    held: bool
    p_next: object
    nxt: int
    fed: int


def on_target(rows, target):
    """Draw distributions (numpy rows from the drafter) as the target's rows: on its device, over its vocabulary
    (a draft's may lack the padded ids); None (a deterministic candidate) kept."""
    def row(q):
        out = torch.zeros(target.config.vocab_size)
        n = min(len(out), len(q))
        out[:n] = torch.from_numpy(q[:n])
        return out.to(target.device)
    return [None if q is None else row(q) for q in rows]


def check_chain(target, seq, pending, q, sampling, gen, extra=()):
    """One forward over what the target has not seen of seq (the prompt, on round 1), then the pending
    draft and any looked-up tokens after it, verified as a chain (each token by the rule its q row says: drawn
    from it, or deterministic). `held`: the pending draft held (the draft's job continues it), extra or not."""
    chain, q = list(pending) + list(extra), list(q) + [None] * len(extra)
    fed = len(seq) - target.length + len(chain)
    q_rows = on_target(q, target) if any(r is not None for r in q) else None
    n, nxt, p_rows = chain_step(target, seq, chain, sampling, gen, q_rows)
    held = n >= len(pending)
    return Verdict(chain[:n], held, p_rows[n], nxt, fed)


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
    free_rounds: int = 0
    free_accepted: int = 0
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
                "acceptance": round(budget.alpha(), 4),
                "lookup_acceptance": round(budget.lookup_alpha(), 4),
                "threads": {"target": most(0), "draft": most(1)},
                "mode_threads": {m: {"target": t, "draft": d} for m, (t, d) in self.mode_threads.items()},
                "verify_ms": mean(self.verify_s, 1e3), "verify_tokens": round(mean(self.verify_tokens), 2),
                "free_rounds": self.free_rounds, "free_accepted": self.free_accepted,
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
        t, d = (self.every, self.every) if on_every_core(mode) else (self.target, self.draft)
        return t, None if kind(mode) == "none" else d


@dataclass(kw_only=True)
class Options:
    """The method's choices (see add_args): most theta-rule sequences, forced k, catch-up tokens, n-gram for free
    candidates, drafts that end within the forward, (under
    sampling) drafts drawn from the draft rather than its top tokens, the target going on while the draft reads the
    prompt, and looked-up tokens after the pending draft."""
    max_seqs: int = 1
    force_k: int = 0
    catch_up: object = 0  # draft tokens, or "auto"
    lookup_ngram: int = 0
    fit: bool = True
    draw: bool = True
    read_beside: bool = True
    extend: bool = True


def free_candidates(index, seq, n, tail=()):
    """Up to n tokens that cost no draft time: what followed the first earlier occurrence of the last n-gram
    of seq + tail (the pending draft) (`index`: whole n-gram matches only, since shorter ones, which PLD backs
    off to, are right too rarely to be worth a forward ahead of the draft's tokens)."""
    return index.lookup(seq, n, tail) if index and n > 0 else []


NO_DRAFTS = Drafts([[]], [0], 1)


@dataclass
class Answer:
    """One answer's state: the sequence (prompt and verified tokens), the new tokens, each round's gain, the
    pending draft (drafted tokens only the first of which may be verified), and what it
    decodes with (sampling, the torch generator, the n-gram index of its free candidates, its statistics)."""
    seq: list
    max_new_tokens: int
    sampling: object
    gen: object
    index: NgramIndex = None
    stats: RoundStats = field(default_factory=RoundStats)
    clock: Clock = field(default_factory=Clock)
    new: list = field(default_factory=list)
    accepts: list = field(default_factory=list)
    pending: list = field(default_factory=list)
    q: list = field(default_factory=list)  # the pending draft's draw distributions (None: deterministic)
    looks: list = field(default_factory=list)  # (position, looked-up tokens) not yet judged by the answer's text
    reading: bool = False  # the draft is still reading the prompt (the prefill round's job is in flight)
    done: bool = False

    @property
    def room(self):
        """Draft tokens the answer may still use (the round's own token comes on top)."""
        return self.max_new_tokens - len(self.new) - 1

    def finished(self):
        return self.done or len(self.new) >= self.max_new_tokens


@dataclass
class Plan:
    """One round: its mode, the chain the forward verifies, whether it was looked up rather than drafted, the
    looked-up tokens verified after a drafted chain, and the job the draft runs meanwhile (None: nothing does),
    with the threads each side has."""
    mode: str
    chain: list
    q: list
    looked_up: bool = False
    extra: list = field(default_factory=list)
    job: DraftJob = None
    caught_s: float = 0.0  # seconds the draft drafted before the forward (a catch-up)
    prefill: bool = False
    draft_threads: int = None


class Rounds:
    """DuoDecoding's state for a run, as llama.cpp's common_speculative keeps one behind a few verbs: the target,
    the draft's worker, the policy (Budget: how much to draft; Modes: which way to run), the options and the
    threads. `generate` runs one answer's rounds as the paper's loop: plan, verify, collect, accept, advance."""

    def __init__(self, target, worker, policy, opt, threads):
        """policy: (Budget, Modes); threads: loop.Threads."""
        self.target, self.worker, self.opt, self.threads = target, worker, opt, threads
        self.budget, self.modes = policy

    def generate(self, prompt_ids, max_new_tokens, sampling, gen):
        ans = self.begin(prompt_ids, max_new_tokens, sampling, gen)
        prefill = True
        while not ans.finished():
            t0 = time.perf_counter()
            p = self.plan(ans, prefill)           # what the forward verifies; what the draft drafts meanwhile
            if p.job:
                self.worker.submit(p.job)
            v = self.verify(ans, p)               # the target's forward: pre-verify, or post-verify the pending
            drafts, beside_s = self.collect(ans, p, v)
            gained = self.accept(ans, p, v, drafts)
            ans.clock.gained(gained)
            self.advance(ans, gained, drafts, p)
            if not prefill:
                self.observe(ans, p, v, len(gained), (time.perf_counter() - t0, beside_s))
            prefill = False
        if ans.reading:  # the next answer's jobs come after this one
            ans.stats.wait(self.worker)
        stats = TurnStats(**ans.stats.as_dict(self.budget), **self.modes.as_dict())
        return finish(ans.new, self.target.stop_ids, max_new_tokens, ans.accepts, ans.clock, stats.write())

    def begin(self, prompt_ids, max_new_tokens, sampling, gen):
        self.target.reset()
        self.budget.start_question()
        self.modes.start_question()
        n = self.opt.lookup_ngram
        return Answer(list(prompt_ids), max_new_tokens, sampling, gen, index=NgramIndex(n, n) if n else None)

    def plan(self, ans, prefill):
        """The round's mode (the prefill runs in the mode that would run next: only the overlapped one drafts beside
        it, so a long prompt's draft prefill does not hold up the first token otherwise), the threads it gives each
        side, what it verifies, and what the draft does meanwhile (or first, if sequential)."""
        mode = self.modes.current if prefill else self.modes.choose()
        if ans.reading and (self.worker.done() or kind(mode) == "sequential" or self.opt.catch_up):
            ans.stats.wait(self.worker)  # the prompt is read (or this round needs the draft first); its token is stale
            ans.reading = False
        self.budget.run_in(mode)
        target_threads, draft_threads = self.threads.of(mode)
        self.target.set_threads(target_threads)
        ans.stats.ran_on(mode, (target_threads, draft_threads))
        gamma = self.budget.gamma()
        ans.stats.gammas.append(gamma)
        p = Plan(mode, ans.pending, ans.q, prefill=prefill, draft_threads=draft_threads)
        if not p.chain and ans.room > 0:
            p.chain = self.look_up(ans, [])[:self.lookup_len(ans, [])]
            p.q = [None] * len(p.chain)
            p.looked_up = bool(p.chain)
            ans.stats.free_rounds += p.looked_up
        wait_for = 0
        if not p.chain and not prefill and ans.room > 0:  # the draft drafts first: an SpS round, or a catch-up
            what = kind(mode)
            wait_for = gamma if what == "sequential" else self.budget.catch_up_len() if what == "overlap" else 0
        if wait_for:
            caught, p.caught_s = self.catch_up(ans, p, wait_for)
            p.chain, p.q = caught.seqs[0], caught.rows(0)
        if p.chain and not p.looked_up and self.opt.extend:
            p.extra = self.look_up(ans, p.chain)[:self.lookup_len(ans, p.chain)]
            ans.stats.free_rounds += bool(p.extra)
        if kind(mode) == "overlap" and not ans.reading:
            p.job = self.job_beside(ans, p, gamma)
        return p

    def look_up(self, ans, tail):
        """The tokens that followed an earlier occurrence of the last n-gram of seq + tail (up to LOOKUP_MOST), noted
        to be judged by the text the answer goes on with, whether or not the forward takes them."""
        found = free_candidates(ans.index, ans.seq, LOOKUP_MOST, tail)
        if found:
            ans.looks.append((len(ans.seq) + len(tail), found))
        return found

    def judge_lookups(self, ans):
        """Looked-up tokens, fed or not, against the tokens the answer kept at their positions: the share the target
        keeps (a forward's test of them is the same choice), learnt without feeding any."""
        left = []
        for pos, found in ans.looks:
            kept = ans.seq[pos:pos + len(found)]
            n = common_prefix(kept, found)
            if n < len(kept) or n == len(found):
                self.budget.record_lookup(n, n + (n < len(found)))
            else:
                left.append((pos, found))
        ans.looks = left

    def lookup_len(self, ans, chain):
        """Looked-up tokens the forward may take after `chain`: as many as raise its expected tokens per second."""
        fed = len(ans.seq) - self.target.length + len(chain)
        return self.budget.lookups(fed, len(chain), min(LOOKUP_MOST, ans.room - len(chain)))

    def catch_up(self, ans, p, n):
        """With nothing pending, wait for n draft tokens (one sequence) so the next forward verifies more than one
        token. Returns the drafts and the job's seconds."""
        n = min(n, ans.room)
        self.worker.submit(DraftJob(context=ans.seq, depth=n, max_seqs=1, depths=self.budget.depths(n),
                                    threads=p.draft_threads, sample=self.draw(ans)))
        drafts, draft_s = ans.stats.wait(self.worker, catching_up=True)
        self.budget.observe_job(drafts, draft_s)
        return drafts, draft_s

    def job_beside(self, ans, p, gamma):
        """The overlapped draft job: it continues the chain while the target verifies it, drafting what ends
        within the forward (round 1: one token, ready when the prefill ends)."""
        left = ans.room - len(p.chain)
        fed = len(ans.seq) - self.target.length + len(p.chain) + len(p.extra)
        depth = 1 if p.prefill else min(gamma, left, self.budget.fits(fed) if self.opt.fit else left)
        return DraftJob(context=ans.seq + p.chain, depth=depth, max_seqs=self.opt.max_seqs if depth > 1 else 1,
                        depths=self.budget.depths(gamma), force_k=self.opt.force_k, threads=p.draft_threads,
                        sample=self.draw(ans))

    def draw(self, ans):
        """Under sampling, the draft draws its sequences from its distribution (temperature, top-k, top-p and a
        seed from the answer's generator); None: it drafts its top tokens (greedy decoding, --drafts greedy, or
        forced k, whose candidates are deterministic)."""
        s, opt = ans.sampling, self.opt
        if s.greedy or not opt.draw or opt.force_k:
            return None
        return s.temperature, s.top_k, s.top_p, int(uniform(ans.gen) * 2 ** 31)

    def verify(self, ans, p):
        """The target's one forward over the plan's chain."""
        t0, stats = time.perf_counter(), ans.stats
        v = check_chain(self.target, ans.seq, p.chain, p.q, ans.sampling, ans.gen, p.extra)
        if not p.prefill:
            self.target.sync()
            stats.verify_s.append(time.perf_counter() - t0)
            stats.verify_tokens.append(v.fed)
        return v

    def collect(self, ans, p, v):
        """The job the draft ran during the forward (cut short if the chain failed: it continues a rejected
        token), and its seconds."""
        if not p.job:
            return NO_DRAFTS, 0.0
        if p.prefill and self.opt.read_beside and not self.worker.done():
            ans.reading = True  # the draft still reads the prompt: the target goes on without it
            return NO_DRAFTS, 0.0
        if not v.held:
            self.worker.stop_early()
        drafts, draft_s = ans.stats.wait(self.worker)
        if not p.prefill:
            self.budget.observe_job(drafts, draft_s)
        return drafts, draft_s

    def accept(self, ans, p, v, drafts):
        """The tokens the round gained: the accepted chain, then the new drafts' first token if the chain held and
        one of them is accepted at the next position (post-verify), else the target's own token."""
        gained, nxt = list(v.gained), v.nxt
        extra = max(0, len(gained) - len(p.chain)) if p.extra else 0
        looked_up = len(gained) if p.looked_up else extra
        ans.stats.free_accepted += looked_up  # looked-up tokens say nothing of the draft's acceptance
        if not p.looked_up:
            drafted = len(gained) - looked_up
            self.budget.record(drafted, drafted + (not v.held))  # tested: the accepted, then a rejection
        if v.held and drafts.seqs[0] and not p.extra:  # after looked-up tokens the drafts' first tokens were tested
            ans.stats.ks[drafts.k] += 1
            rows = on_target([drafts.rows(s)[0] for s in range(drafts.k)], self.target)
            hit, nxt = accept_siblings(v.p_next, [(seq[0], q) for seq, q in zip(drafts.seqs, rows)], ans.gen)
            self.budget.record(hit is not None, 1)
        return gained + [nxt]

    def advance(self, ans, gained, drafts, p):
        """Append the gained tokens; the next pending draft is what the draft holds beyond them: the sequence that
        continues the accepted first token."""
        ans.seq += gained
        ans.new += gained
        self.judge_lookups(ans)
        ans.accepts.append(len(gained))
        ans.done = stopped(gained, self.target.stop_ids)
        ans.pending, ans.q = drafts.continuation(p.job.context if p.job else [], ans.seq)

    def observe(self, ans, p, v, gained, seconds):
        """What a round (after the prefill) measured: its forward (its jobs were observed as they ended), the rest
        of the round that neither side's measured work explains (Python, messages), and its gain for the report.
        `seconds`: (the round's, the draft job's beside the forward)."""
        round_s, beside_s = seconds
        verify_s = ans.stats.verify_s[-1]
        self.budget.observe_forward(v.fed, verify_s)
        self.budget.observe_rest(round_s - p.caught_s - max(verify_s, beside_s))
        self.modes.observe(p.mode, gained, round_s)
