"""How DuoDecoding runs its rounds: how much to draft (gamma, and each sequence's depth), and which way to run
(overlap, sequential or none, on each side's cores or every core), from the costs its own rounds measure.

    Costs   one way of running's measured seconds: the target's forward over n tokens, a draft job, the rest
    Budget  gamma and the depths, and each mode's expected tokens per second (rules.py's formulas on its Costs)
    Modes   the scheduler: runs the fastest mode, re-measures the others now and then (Tunables)

The loop talks to them through a few verbs: Budget.gamma(), .fits(fed), .depths(gamma), .lookups(fed, drafted, most),
.observe_forward(), .observe_job(), .observe_rest(), .record(accepted, verified), .record_lookup(accepted, verified);
Modes.choose(), .observe()."""
from dataclasses import dataclass

import numpy as np

from src.model.duodec.rules import balance_gamma, chain_tokens, kind, overlap_rate, split_depths

# a question's acceptance starts from 0.6 over 20 tokens, so its first rounds' gamma is neither 1 nor the cap
PRIOR_ACCEPTANCE, PRIOR_TOKENS = 0.6, 20
# looked-up tokens: at most PLD's 10 a forward; a question takes them as right half the time over 10 tokens until
# its own say otherwise
LOOKUP_MOST, LOOKUP_PRIOR = 10, (0.5, 10)


def ema(old, new, n, floor=0.2):
    """A running mean over the first 1 / floor measurements, then a moving average that follows the machine."""
    return old + max(1.0 / n, floor) * (new - old)


class Costs:
    """One way of running's seconds, as its own rounds measure them (the start-up probe's until then): the
    target's forward over n tokens (the probe's curve, scaled), a draft job's fixed cost (catching up
    with its context, choosing its first tokens) and each further step, and the rest of a round (the loop's
    Python, the messages). Beside the target the draft steps slower than alone; on every core both are faster."""

    def __init__(self, draft_step, target_fwd):
        ns = sorted(target_fwd)
        self.one = target_fwd[ns[0]] if ns[0] == 1 else None
        more = [n for n in ns if n > 1] if self.one is not None and len(ns) > 2 else ns
        self.slope, self.base = np.polyfit(more, [target_fwd[n] for n in more], 1)
        self.step = self.setup = draft_step[1]
        self.scale, self.rest = 1.0, 0.0
        self.seen = {"forward": 0, "draft": 0, "rest": 0}

    def probe(self, n):
        """The probe's forward over n tokens: one token's as timed, more on the straight line through the other
        sizes. One token's forward runs other kernels (matrix-vector products), which on some CPUs cost half of
        two tokens'; a line through every size would miss that, a curve through each would follow the noise."""
        return self.one if n == 1 and self.one is not None else self.base + self.slope * n

    def forward(self, n):
        return self.scale * self.probe(n)

    def line(self, n):
        """The forward on the line alone, one token included: the cost of gamma in the paper's rule, whose rounds
        feed gamma drafts and the token before them, never one token's kernels."""
        return self.scale * (self.base + self.slope * n)

    def draft(self, n):
        """Seconds to draft n tokens: the job's fixed cost gives the first, each step one more."""
        return self.setup + (n - 1) * self.step if n > 0 else 0.0

    def restart(self):
        """Measure afresh: the next rounds' running mean replaces what older rounds measured."""
        self.seen = dict.fromkeys(self.seen, 0)

    def count(self, part):
        self.seen[part] += 1
        return self.seen[part]

    def observe_forward(self, fed, seconds):
        self.scale = ema(self.scale, seconds / self.probe(fed), self.count("forward"))

    def observe_draft(self, seconds, steps, step_s, single=1.0):
        """A job's seconds, `steps` of them decode steps (`step_s` seconds) over sequences that cost `single`
        times one sequence's step each (the probe's ratio)."""
        n = self.count("draft")
        self.setup = ema(self.setup, seconds - step_s, n)
        if steps:
            self.step = ema(self.step, step_s / steps / single, n)

    def observe_rest(self, seconds):
        self.rest = max(0.0, ema(self.rest, seconds, self.count("rest")))

    def as_ms(self):
        return {"forward_1": round(self.forward(1) * 1e3, 4), "forward_scale": round(self.scale, 3),
                "draft_setup": round(self.setup * 1e3, 4), "draft_step": round(self.step * 1e3, 4),
                "rest": round(self.rest * 1e3, 4)}


READ_AT_MOST = 64  # context tokens a round's draft job reads at most: more is a prompt


class Budget:
    """Draft tokens per round (gamma), each sequence's depth when k sequences share a round, and what each way
    of running (MODES) would gain per second, from the costs its rounds measured and the acceptance.

    fixed: --gamma N. time: balance_gamma. acceptance: the gamma that maximises the expected tokens per
    round, (1 - a^g) / (1 - a), over the round's time (overlap: max(T_target(g), T_draft(g)); sequential:
    their sum), with a the share of draft tokens accepted so far in the question (from a prior of 0.6 over 20
    tokens). Each mode keeps its own Costs, since beside the target the draft steps slower than alone, and on
    every core (the -all modes, probed apart) both sides run faster. A round's forward may also feed fewer
    tokens than gamma (one after a rejection): `fits` caps its draft at what ends within that forward.
    """

    CAP = 64  # the most draft tokens a round asks for

    def __init__(self, rule, fixed, draft_step, target_fwd, every_core=None, catch_up=0):
        """every_core: the probe's (draft_step, target_fwd) on every core, for the -all modes (None: no such modes);
        catch_up: the draft tokens an empty overlapped round waits for (N, or "auto": see catch_up_len)."""
        self.rule, self.fixed, self.cap, self.catch_up = rule, fixed, self.CAP, catch_up
        self.draft_step = draft_step
        self.time_gamma = balance_gamma(draft_step, target_fwd, self.cap)
        self.costs = {m: Costs(draft_step, target_fwd) for m in ("overlap", "sequential", "none")}
        if every_core:
            self.costs.update({m: Costs(*every_core) for m in ("sequential-all", "none-all")})
        self.mode, self.switched = "overlap", False
        self.pair = [PRIOR_ACCEPTANCE * PRIOR_TOKENS, float(PRIOR_TOKENS)]  # over every question, for Modes
        self.start_question()

    def start_question(self):
        """Each question learns its own acceptance from the prior: its gamma then depends on it alone, not
        on the questions (and warm-up) before it or on the order methods take turns in."""
        self.accepted, self.verified = PRIOR_ACCEPTANCE * PRIOR_TOKENS, float(PRIOR_TOKENS)
        self.looked = [LOOKUP_PRIOR[0] * LOOKUP_PRIOR[1], float(LOOKUP_PRIOR[1])]

    def alpha(self):
        return min(self.accepted / self.verified, 0.99)

    def lookup_alpha(self):
        """The share of looked-up tokens the question's text kept (of those it reached), judged by the loop as the
        answer grows, whether a forward took them or not."""
        return min(self.looked[0] / self.looked[1], 0.99)

    def record_lookup(self, accepted, verified):
        self.looked[0] += accepted
        self.looked[1] += verified

    def record(self, accepted, verified):
        self.accepted += accepted
        self.verified += verified
        self.pair[0] += accepted
        self.pair[1] += verified

    def pair_alpha(self):
        """The draft's acceptance over every question so far: what a mode's rounds would meet on this pair."""
        return min(self.pair[0] / self.pair[1], 0.99)

    def run_in(self, mode):
        """The next round's mode. The first round after a change says little of the new mode's costs (threads
        wake, the worker's first message waits), so it is not measured."""
        self.switched, self.mode = mode != self.mode, mode

    def step_cost(self, k):
        """The probe's time of a step over k sequences."""
        ks = sorted(self.draft_step)
        return float(np.interp(k, ks, [self.draft_step[x] for x in ks]))

    @property
    def now(self):
        """The running mode's costs."""
        return self.costs[self.mode]

    def observe_forward(self, fed, seconds):
        """One round's target forward over `fed` tokens, in the running mode. Costs are the machine's, not the
        question's, so they carry over between questions."""
        if fed and not self.switched:
            self.now.observe_forward(fed, seconds)

    def observe_job(self, drafts, seconds):
        """A draft job's seconds, in the running mode: its decode steps (Drafts.steps, .step_s) over its sequences,
        after reading `drafts.synced` tokens of context (a job that first read a prompt says nothing of a round's
        cost)."""
        if seconds and not self.switched and drafts.synced <= READ_AT_MOST:
            single = self.step_cost(drafts.k) / self.draft_step[1]
            self.now.observe_draft(seconds, drafts.steps, drafts.step_s, single)

    def fits(self, fed):
        """Draft tokens that end within the target's forward over `fed` tokens: more would make it wait."""
        c = self.now
        return max(1, 1 + int((c.forward(fed) - c.setup) / c.step))

    def lookups(self, fed, drafted, most):
        """Looked-up tokens worth adding to a forward over `fed` tokens, `drafted` of them the pending draft's: the
        n <= most that maximises the round's expected tokens per second, from the forward's measured cost and the
        question's acceptance of draft and looked-up tokens (reached only if the pending draft holds). A forward
        flat in its tokens takes them all; a steep one (fp32 on narrow vector units) only those likely kept."""
        c, a, b = self.now, self.alpha(), self.lookup_alpha()
        tokens, reach = chain_tokens(a, drafted), a ** drafted
        none = tokens / (c.forward(fed) + c.rest)
        n_best, best = 0, 0.0
        for n in range(1, most + 1):  # tokens rise ever less, the time linearly: stop where it stops rising
            reach *= b
            tokens += reach
            rate = tokens / (c.forward(fed + n) + c.rest)
            if rate <= best:
                break
            n_best, best = n, rate
        # (none apart: one token's forward may cost far less than the line, so the rate can fall, then rise)
        return n_best if best > none else 0

    def observe_rest(self, seconds):
        if not self.switched:
            self.now.observe_rest(seconds)

    def best(self, mode=None, a=None):
        """(gamma, expected tokens per second) of a mode (default: the running one) at acceptance a (default:
        the question's). none: the target alone, one token a forward."""
        c, what = self.costs[mode or self.mode], kind(mode or self.mode)
        a = self.alpha() if a is None else a
        if what == "none":
            return 0, 1.0 / (c.forward(1) + c.rest)
        if self.rule == "fixed" or (self.rule == "time" and what == "overlap"):
            g = self.fixed if self.rule == "fixed" else self.time_gamma
        else:  # tokens per second rises then falls in g (a concave count over a convex time), so the scan stops at
            # the first fall: plain arithmetic, not arrays, since this runs every round
            g, best_rate, tokens, reach = 1, 0.0, 0.0, 1.0
            for n in range(1, self.cap + 1):
                tokens, reach = tokens + reach, reach * a
                f, d = c.line(n), c.draft(n)
                rate = tokens / (f + d if what == "sequential" else max(f, d))
                if rate < best_rate:
                    break
                if rate > best_rate:
                    g, best_rate = n, rate
        if what == "sequential":
            return g, chain_tokens(a, g) / (c.draft(g) + c.forward(g + 1) + c.rest)
        full = max(c.forward(g + 1), c.draft(g)) + c.rest
        n = self.catch_up_len(a)
        empty = (c.draft(n) + c.forward(n + 1) if n else max(c.forward(1), c.draft(1))) + c.rest
        return g, overlap_rate(a, full, empty, g, n)

    def gamma(self):
        return self.best()[0]

    def catch_up_len(self, a=None):
        """Draft tokens an overlapped round waits for when nothing is pending: N, or (auto) what a sequential round
        would draft at acceptance a, so that a drained pipeline restarts with an SpS round, not one token."""
        return self.best("sequential", a)[0] if self.catch_up == "auto" else self.catch_up

    def depths(self, gamma):
        """Each sequence's length for k = 1..max sequences: gamma split k ways (the paper's)."""
        return split_depths(gamma, max(self.draft_step))


@dataclass(frozen=True)
class Tunables:
    """The scheduler's constants. A mode other than the running one is re-measured for `explore_rounds` rounds
    after `explore_after` rounds, then twice as rarely each time it stays behind (four times when its rate is under
    `far_behind` of the running one's), at most every `most_apart` rounds. A mode replaces the running one only if
    its rate beats it by `margin`; rates are compared every `every` rounds (the model scans gamma per mode)."""
    explore_after: int = 64
    explore_rounds: int = 4
    most_apart: int = 1024
    margin: float = 1.03
    far_behind: float = 0.6
    every: int = 8


class Modes:
    """Which way DuoDecoding runs its next rounds: overlap (the draft drafts while the target verifies), sequential
    (draft, then verify, nothing beside the target's forward, as SpS with a GGUF draft does) or none (the target
    alone, with free candidates), each on its own threads or (-all) on every core in its turn.

    A mode's rate is the Budget's model of it: its own measured costs at the pair's acceptance, shared by
    every mode, so that the text being easy or hard does not favour whichever mode ran on it (what rounds
    gained would: a mode that ran on an easy stretch, or one where looked-up tokens held, would look fast).
    The fastest runs, unless it beats the running one by less than `margin`. Every other mode is re-measured for
    a few rounds now and then, less often each time it stays behind, so a quiet machine pays little; a busy one
    shows at once in the running mode's own costs. Rates are compared every `every` rounds: the model costs a
    scan of gamma per mode. Costs belong to the machine and carry over between questions; counts do not."""

    def __init__(self, budget, forced=None, tune=Tunables()):
        self.budget, self.forced, self.tune = budget, forced, tune
        self.names = list(budget.costs)
        self.apart = {m: tune.explore_after for m in self.names}  # rounds between re-measurements of a mode
        self.waited = {m: 0 for m in self.names}
        self.exploring, self.left, self.since = None, 0, 0
        self.rates = self.model_rates()
        self.current = forced or max(self.rates, key=self.rates.get)
        self.start_question()

    def start_question(self):
        self.rounds = {m: 0 for m in self.names}
        self.gained, self.seconds = {m: 0 for m in self.names}, {m: 0.0 for m in self.names}
        self.switches = []

    def model_rates(self):
        """Each mode's tokens per second at the pair's acceptance (a question's own starts from a prior, and
        rounds without drafts would never correct it)."""
        a = self.budget.pair_alpha()
        return {m: self.budget.best(m, a)[1] for m in self.names}

    def rate(self, mode):
        return self.rates[mode]

    def best(self):
        best = max(self.rates, key=self.rates.get)
        return best if self.rates[best] > self.tune.margin * self.rates[self.current] else self.current

    def choose(self):
        """The mode of the next round."""
        if self.forced:
            mode = self.forced
        elif self.exploring:
            mode = self.exploring
            self.left -= 1
            if self.left == 0:
                self.exploring, self.since = None, self.tune.every  # judge at once what it measured
        else:
            self.since += 1
            if self.since >= self.tune.every:
                self.since, self.rates = 0, self.model_rates()
                best = self.best()
                if best != self.current:
                    self.switches.append(f"{self.current} -> {best} at round {sum(self.rounds.values())}: "
                                         f"{self.rates[self.current]:.1f} < {self.rates[best]:.1f} tokens/s")
                    self.apart[self.current] = self.tune.explore_after
                    self.current = best
            mode = self.current
            for m in self.waited:
                if m == mode:
                    continue
                self.waited[m] += 1
                if self.waited[m] >= self.apart[m]:  # re-measure m, then wait twice as long if it stays behind
                    far = self.rates[m] < self.tune.far_behind * self.rates[mode]  # (four times if far behind)
                    self.waited[m], self.apart[m] = 0, min((4 if far else 2) * self.apart[m], self.tune.most_apart)
                    self.exploring, self.left = m, self.tune.explore_rounds
                    self.budget.costs[m].restart()
                    break
        self.rounds[mode] += 1
        return mode

    def observe(self, mode, tokens, seconds):
        """One round of `mode` gained `tokens` in `seconds`: for the report only (see the class's note)."""
        self.gained[mode] += tokens
        self.seconds[mode] += seconds

    def as_dict(self):
        return {"mode_rounds": dict(self.rounds), "mode_switches": self.switches[:20],
                "mode_rates": {m: round(r, 2) for m, r in self.model_rates().items()},
                "mode_measured": {m: round(self.gained[m] / self.seconds[m], 2) for m in self.names if self.seconds[m]},
                "mode_costs_ms": {m: c.as_ms() for m, c in self.budget.costs.items() if self.rounds[m]}}
