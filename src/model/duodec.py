"""DuoDecoding (arXiv 2503.00784): a llama.cpp draft on the CPU drafts while the target verifies.

Each round the target runs one forward over the last verified token plus the pending draft (the
chosen sequence of the previous round, only its first token verified), while the draft worker
drafts the next sequences from the end of that pending draft. Then:
  - the pending draft is verified as a chain;
  - if all of it holds, the first tokens of the new sequences are tried at the next position, and
    the accepted sequence becomes the new pending draft (post-verify: the pipeline stays full);
  - otherwise the target's own token is appended, the new drafts are discarded (pre-verify).
After a rejection the next forward would verify nothing new, so it first waits for --catch-up draft
tokens: one sequence (--verify first), or k sequences verified together as a tree (--verify tree).
Every candidate is deterministic (greedy draft tokens, top-k first tokens), so the
deterministic-candidate rule keeps sampling exact.

Dynamic multi-sequence drafting: theta = p(1st top-1) * p(2nd top-1); every other first-position
token with p > theta (up to --max-seqs) starts its own sequence. All sequences advance in one
`llama_decode` per step (unified KV, sequence ids), not one after another.
"""
import multiprocessing as mp
import queue
import signal
import threading
import time
import traceback
from dataclasses import dataclass

import numpy as np
from scipy.special import softmax

from src.argtypes import gamma_or_auto, non_negative, ranged
from src.model.base import Clock, chain_step, common_prefix, finish, median_seconds, tree_step
from src.verify import accept_candidates

DRAFT = "gguf"
WORKER_TIMEOUT = 5.0


def add_args(ap):
    ap.add_argument("--gamma", type=gamma_or_auto, default="auto",
                    help="draft tokens per round: 'auto' (from the measured speeds, see --gamma-rule) or N")
    ap.add_argument("--max-seqs", type=ranged(int, 1, 8), default=8, help="duodec: most draft sequences per round")
    ap.add_argument("--no-multiseq", action="store_true", help="duodec: one sequence (PEARL with a CPU draft)")
    ap.add_argument("--seq-budget", choices=["split", "full"], default="split",
                    help="duodec: k sequences share gamma (upstream) or each gets the depth that fits the "
                         "same wall time")
    ap.add_argument("--worker", choices=["thread", "process"], default="thread", help="duodec: draft worker")
    ap.add_argument("--catch-up", type=non_negative, default=4,
                    help="duodec: after a rejection, wait for this many draft tokens before the next target "
                         "forward (0: upstream's pre-verify round, which verifies one token)")
    ap.add_argument("--verify", choices=["first", "tree"], default="first",
                    help="duodec: after a rejection, draft one sequence for the catch-up forward (first: the "
                         "other sequences are judged by their first token only, upstream's scheme) or k "
                         "sequences verified together as a tree in that forward")
    ap.add_argument("--gamma-rule", choices=["acceptance", "time"], default="acceptance",
                    help="duodec, with --gamma auto: maximise expected tokens per second given the acceptance "
                         "measured so far, or balance drafting and verification time (the paper's rule)")
    ap.add_argument("--force-seqs", type=ranged(int, 0, 8), default=0,
                    help="duodec: always draft this many sequences (the top first tokens); for ablations and tests")


# -- the multi-sequence rule (pure) ---------------------------------------------------------------

def choose_first_tokens(p_first, p_second_top1, max_seqs):
    """First tokens of the draft sequences: the top-1, plus each next-ranked token whose probability
    beats theta = p(1st top-1) * p(2nd top-1), up to max_seqs in all."""
    order = np.argsort(-p_first, kind="stable")[:max_seqs]
    theta = p_first[order[0]] * p_second_top1
    firsts = [int(order[0])]
    for t in order[1:]:
        if p_first[t] <= theta:
            break
        firsts.append(int(t))
    return firsts


# -- drafting (runs in the worker) ----------------------------------------------------------------

class Drafter:
    """Owns a llama.cpp `Draft` and the tokens each of its sequences holds; drafts k greedy sequences."""

    def __init__(self, draft):
        self.draft, self.branches = draft, [[]]

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
        return self.draft.eval(context[keep:])

    def run(self, context, depth, max_seqs, depth_for_k=None, cancel=None, force_k=0):
        """Draft sequences continuing `context`. depth_for_k(k) gives each sequence's length;
        force_k > 0 skips the theta rule and drafts from the force_k most likely first tokens."""
        logits = self.sync(context)
        if depth <= 0:
            return [[]]
        p1 = softmax(logits)
        top1 = int(p1.argmax())
        second = None
        if force_k > 1:
            firsts = [int(t) for t in np.argsort(-p1, kind="stable")[:force_k]]
        elif max_seqs > 1 and depth > 1:
            second = self.draft.eval([top1])  # theta needs it; it is also sequence 0's next step
            firsts = choose_first_tokens(p1, float(softmax(second).max()), max_seqs)
        else:
            firsts = [top1]
        k = len(firsts)
        n = max(1, min(depth, depth_for_k(k)) if depth_for_k else depth)
        seqs = [[t] for t in firsts]
        for s in range(1, k):  # branch with sequence ops, not state copies
            self.draft.fork(0, s, len(context))
        if n > 1:  # decode every sequence's first token (sequence 0's may already be done)
            rows = [(seqs[s][0], s, True) for s in range(k) if s > 0 or second is None]
            last = ([second] if second is not None else []) + list(self.draft.decode(rows))
        for _ in range(n - 1):
            for s in range(k):
                seqs[s].append(int(np.argmax(last[s])))
            if len(seqs[0]) == n or (cancel is not None and cancel.is_set()):
                break
            last = list(self.draft.decode([(seqs[s][-1], s, True) for s in range(k)]))
        self.branches = [(list(context) + seqs[s])[:self.draft.lengths[s]] for s in range(k)]
        return seqs


class ThreadWorker:
    """The drafter in a thread: llama_decode releases the GIL, so it overlaps the target's forward."""

    def __init__(self, draft):
        self.drafter = Drafter(draft)
        self.jobs, self.results = queue.Queue(), queue.Queue()
        self.cancel = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while True:
            job = self.jobs.get()
            if job is None:
                return
            try:
                t0 = time.perf_counter()
                out = job[0](self.drafter, *job[1:], cancel=self.cancel)
                self.results.put(("ok", out, time.perf_counter() - t0))
            except Exception:  # report, keep serving
                self.results.put(("error", traceback.format_exc(), 0.0))

    def submit(self, fn, *args):
        self.cancel.clear()
        self.jobs.put((fn, *args))

    def stop_early(self):
        self.cancel.set()

    def result(self, timeout=WORKER_TIMEOUT):
        return _unwrap(self.results, timeout, self.thread.is_alive)

    def close(self):
        self.jobs.put(None)


def _process_main(path, threads, n_ctx, n_seq, repack, conn, cancel):
    import signal

    from src.backends.draft import Draft
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to report, once
    drafter = Drafter(Draft(path, threads=threads, n_ctx=n_ctx, n_seq=n_seq, repack=repack))
    conn.send(("ready", None, 0.0))
    while True:
        job = conn.recv()
        if job is None:
            return
        try:
            t0 = time.perf_counter()
            out = job[0](drafter, *job[1:], cancel=cancel)
            conn.send(("ok", out, time.perf_counter() - t0))
        except Exception:
            conn.send(("error", traceback.format_exc(), 0.0))


class ProcessWorker:
    """The drafter in its own process (no GIL sharing), fed over a pipe."""

    def __init__(self, draft):
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.cancel = ctx.Event()
        self.proc = ctx.Process(target=_process_main, daemon=True,
                                args=(str(draft.path), draft.threads, draft.n_ctx, draft.n_seq, draft.repack_mode, child,
                                      self.cancel))
        self.proc.start()
        self._recv(60.0)  # loading the model

    def died(self):
        """The worker's end, read after join (exitcode is None until then)."""
        self.proc.join(1)
        code = self.proc.exitcode
        how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        return RuntimeError(f"the draft worker process died ({how})")

    def _recv(self, timeout):
        deadline = time.perf_counter() + timeout
        try:
            while not self.conn.poll(0.05):
                if not self.proc.is_alive():
                    raise self.died()
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"the draft worker gave no answer in {timeout:.0f} s")
            status, out, secs = self.conn.recv()
        except (EOFError, OSError):
            raise self.died() from None
        if status == "error":
            raise RuntimeError(f"the draft worker failed:\n{out}")
        return out, secs

    def submit(self, fn, *args):
        self.cancel.clear()
        try:
            self.conn.send((fn, *args))
        except OSError:
            raise self.died() from None

    def stop_early(self):
        self.cancel.set()

    def result(self, timeout=WORKER_TIMEOUT):
        return self._recv(timeout)

    def close(self):
        if self.proc.is_alive():
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.proc.join(2)
            if self.proc.is_alive():
                self.proc.kill()


def _unwrap(results, timeout, alive):
    deadline = time.perf_counter() + timeout
    while True:
        try:
            status, out, secs = results.get(timeout=0.05)
            break
        except queue.Empty:
            if not alive():
                raise RuntimeError("the draft worker thread died")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"the draft worker gave no answer in {timeout:.0f} s")
    if status == "error":
        raise RuntimeError(f"the draft worker failed:\n{out}")
    return out, secs


def draft_job(drafter, context, depth, max_seqs, depth_by_k=None, force_k=0, cancel=None):
    fn = (lambda k: depth_by_k.get(k, depth_by_k[max(depth_by_k)])) if depth_by_k else None
    return drafter.run(context, depth, max_seqs, fn, cancel, force_k)


# -- the decoding loop ----------------------------------------------------------------------------

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
    """One forward over what the target has not seen of seq (the prompt, on the first round), then the
    pending draft, verified as a chain."""
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


def generate(target, worker, prompt_ids, max_new_tokens, sampling, gen, budget, max_seqs, force_k=0, catch_up=0,
             tree=False):
    clock = Clock()
    target.reset()
    budget.start_question()
    eos = target.eos_token_id
    seq, pending, new = list(prompt_ids), [], []
    accepts, ks, gammas, t_target_idle, t_draft_busy, tree_rounds = [], {}, [], 0.0, 0.0, 0
    verify_s, verify_tokens = [], []  # the target's work per round after the prefill: forward and verification
    t_start = time.perf_counter()
    first_round = True
    while len(new) < max_new_tokens and eos not in new:
        room = max_new_tokens - len(new) - 1
        caught = None
        if catch_up and not pending and not first_round and room > 0:
            # after a rejection: wait for a few draft tokens so this forward verifies more than one token;
            # with `tree`, k sequences by the theta rule, all verified in this forward
            t_wait = time.perf_counter()
            worker.submit(draft_job, seq, min(catch_up, room), max_seqs if tree else 1, budget.depths(catch_up),
                          force_k if tree else 0)
            caught, t_draft = worker.result()
            pending = caught[0]
            t_target_idle += time.perf_counter() - t_wait
            t_draft_busy += t_draft
        room -= len(pending)
        gamma = budget.gamma()
        gammas.append(gamma)
        depth = 1 if first_round else min(gamma, room)  # round 1 overlaps the prefill: one token is ready in time
        # the draft continues the pending draft (sequence 0 of a tree) while the target verifies it
        worker.submit(draft_job, seq + pending, depth, max_seqs if depth > 1 else 1, budget.depths(gamma), force_k)
        t_verify = time.perf_counter()
        if caught is not None and len(caught) > 1:
            tree_rounds += 1
            ks[len(caught)] = ks.get(len(caught), 0) + 1
            v = check_tree(target, seq, caught, sampling, gen)
        else:
            v = check_chain(target, seq, pending, sampling, gen)
        gained, held, nxt = v.gained, v.held, v.nxt
        if not first_round:
            target.sync()
            verify_s.append(time.perf_counter() - t_verify)
            verify_tokens.append(v.fed)
        if not held:
            worker.stop_early()  # its drafts continue a rejected token: cut them short
        t_wait = time.perf_counter()
        seqs, t_draft = worker.result()
        t_target_idle += time.perf_counter() - t_wait
        t_draft_busy += t_draft
        first_round = False
        budget.record(len(gained), len(gained) + (not v.at_leaf))  # tokens tested: the accepted, then a rejection
        if held and seqs[0]:
            # the pending draft held: try the new sequences' first tokens at the next position
            ks[len(seqs)] = ks.get(len(seqs), 0) + 1
            hit, nxt = accept_candidates(v.p_next, [s[0] for s in seqs], gen)
            budget.record(hit is not None, 1)
            pending = seqs[hit][1:] if hit is not None else []
        else:
            pending = []
        gained.append(nxt)
        clock.first_token()
        seq += gained
        new += gained
        accepts.append(len(gained))
    wall = time.perf_counter() - t_start
    stats = {"k_hist": {str(k): v for k, v in sorted(ks.items())}, "gamma": round(float(np.mean(gammas)), 2),
             "acceptance": round(budget.alpha(), 4), "tree_rounds": tree_rounds,
             "verify_ms": round(1e3 * float(np.mean(verify_s)), 4) if verify_s else 0.0,
             "verify_tokens": round(float(np.mean(verify_tokens)), 2) if verify_tokens else 0.0,
             "target_idle_share": round(t_target_idle / wall, 4) if wall else 0.0,
             "draft_idle_share": round(max(0.0, 1 - t_draft_busy / wall), 4) if wall else 0.0}
    return finish(new, eos, max_new_tokens, accepts, clock, stats)


# -- hardware-aware budget --------------------------------------------------------------------------

def measure(target, draft, max_seqs, context_len=64):
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
        draft_step[k] = median_seconds(step, 9)
        drafter.branches = [list(ctx)]
    drafter.reset()
    target_fwd = {}
    target.reset()
    target.forward(ctx)
    for n in (1, 4, 8, 16, 32, 64):
        def fwd(n=n):
            target.forward(ctx[:n] if n <= len(ctx) else (ctx * 2)[:n])
            target.sync()  # on a GPU, time the kernels, not their launch
            target.rollback(len(ctx))
        fwd()
        target_fwd[n] = median_seconds(fwd, 9)
    target.reset()
    return draft_step, target_fwd


def balance_gamma(draft_step, target_fwd, cap=64):
    """The paper's rule: the smallest gamma whose drafting time covers one target forward over gamma tokens."""
    ns = sorted(target_fwd)
    t_fwd = lambda n: float(np.interp(n, ns, [target_fwd[x] for x in ns]))
    for g in range(1, cap + 1):
        if g * draft_step[1] >= t_fwd(g):
            return g
    return cap


PRIOR_ACCEPTANCE, PRIOR_TOKENS = 0.6, 20


class Budget:
    """Draft tokens per round (gamma), and each sequence's depth when k sequences share a round.

    fixed: --gamma N. time: balance_gamma. acceptance: the gamma that maximises the expected tokens per
    round, (1 - a^g) / (1 - a) for acceptance a, over the round's time max(T_target(g), g * t_draft),
    with a the share of draft tokens accepted so far in the question (from a prior of 0.6 over 20 tokens) and
    T_target a straight line fitted to the measured forward times.
    """

    def __init__(self, rule, fixed, draft_step, target_fwd, seq_budget="split", cap=64):
        self.rule, self.fixed, self.cap, self.seq_budget = rule, fixed, cap, seq_budget
        self.draft_step = draft_step
        ns = np.array(sorted(target_fwd), dtype=float)
        self.slope, self.base = np.polyfit(ns, [target_fwd[int(n)] for n in ns], 1)
        self.time_gamma = balance_gamma(draft_step, target_fwd, cap)
        self.start_question()

    def start_question(self):
        """Each question learns its own acceptance from the prior: its gamma then depends on it alone, not
        on the questions (and warm-up) before it or on the order methods take turns in."""
        self.accepted, self.verified = PRIOR_ACCEPTANCE * PRIOR_TOKENS, float(PRIOR_TOKENS)

    def alpha(self):
        return min(self.accepted / self.verified, 0.99)

    def record(self, accepted, verified):
        self.accepted += accepted
        self.verified += verified

    def gamma(self):
        if self.rule == "fixed":
            return self.fixed
        if self.rule == "time":
            return self.time_gamma
        a, t_d = self.alpha(), self.draft_step[1]
        rate = lambda g: (1 - a ** g) / (1 - a) / max(self.base + self.slope * g, g * t_d)
        return max(range(1, self.cap + 1), key=rate)

    def depths(self, gamma):
        """Each sequence's length for k = 1..max sequences: gamma split k ways (upstream), or as deep
        as the measured cost of k sequences per step allows in gamma single-sequence steps."""
        ks = sorted(self.draft_step)
        step = lambda k: float(np.interp(k, ks, [self.draft_step[x] for x in ks]))
        if self.seq_budget == "split":
            return {k: max(1, gamma // k) for k in range(1, max(ks) + 1)}
        return {k: max(1, int(gamma * self.draft_step[1] / step(k))) for k in range(1, max(ks) + 1)}


def make(args, target, draft):
    max_seqs = 1 if args.no_multiseq else min(max(args.max_seqs, args.force_seqs), draft.n_seq)
    draft_step, target_fwd = measure(target, draft, max_seqs)
    auto = args.gamma in (None, "auto")
    budget = Budget(args.gamma_rule if auto else "fixed", None if auto else int(args.gamma), draft_step, target_fwd,
                    args.seq_budget)
    worker = (ProcessWorker if args.worker == "process" else ThreadWorker)(draft)

    def forward(prompt_ids, max_new_tokens, sampling, gen):
        return generate(target, worker, prompt_ids, max_new_tokens, sampling, gen, budget, max_seqs,
                        args.force_seqs, args.catch_up, args.verify == "tree")

    forward.close = worker.close
    forward.worker = worker
    forward.settings = {
        "gamma": "auto" if auto else int(args.gamma), "gamma_rule": budget.rule,
        "time_balance_gamma": budget.time_gamma,
        "catch_up": args.catch_up, "verify": args.verify, "max_seqs": max_seqs, "seq_budget": args.seq_budget,
        "worker": args.worker, "force_seqs": args.force_seqs,
        "draft_step_ms": {k: round(v * 1e3, 4) for k, v in draft_step.items()},
        "target_forward_ms": {n: round(v * 1e3, 4) for n, v in target_fwd.items()}}
    return forward
