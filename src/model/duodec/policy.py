"""How much DuoDecoding drafts: gamma per round, by one of three rules, and each sequence's depth when k
sequences share a round. Pure arithmetic on measured times and counted acceptances."""
import numpy as np


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
    round, (1 - a^g) / (1 - a) for acceptance a, over the round's time max(T_target(g), T_draft(g)),
    with a the share of draft tokens accepted so far in the question (from a prior of 0.6 over 20 tokens),
    T_target a straight line fitted to the probe's forward times and T_draft(g) a job's fixed cost plus
    g - 1 steps.

    The times are measured again in the rounds (`observe`), since beside the target the draft steps slower
    than alone, and its jobs have a fixed cost the probe does not see. A round's forward may also feed fewer
    tokens than gamma (one after a rejection): `fits` caps its draft at what ends within that forward.
    """

    def __init__(self, rule, fixed, draft_step, target_fwd, seq_budget="split", cap=64):
        self.rule, self.fixed, self.cap, self.seq_budget = rule, fixed, cap, seq_budget
        self.draft_step = draft_step
        ns = np.array(sorted(target_fwd), dtype=float)
        self.slope, self.base = np.polyfit(ns, [target_fwd[int(n)] for n in ns], 1)
        self.time_gamma = balance_gamma(draft_step, target_fwd, cap)
        self.step, self.setup, self.fwd_scale = draft_step[1], draft_step[1], 1.0  # until rounds measure them
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

    def step_cost(self, k):
        """The probe's time of a step over k sequences."""
        ks = sorted(self.draft_step)
        return float(np.interp(k, ks, [self.draft_step[x] for x in ks]))

    def observe(self, fed, verify_s, draft_s, steps, step_s, seqs=1, weight=0.2):
        """One round's timings: the target's forward over `fed` tokens against the probe's line; the draft
        job's fixed cost (its seconds `draft_s` less its `steps` decode steps over `seqs` sequences, `step_s`
        seconds) and its seconds per single-sequence step (scaled by the probe's cost of such steps), all
        while the other side runs. They are the machine's, not the question's, so they carry over between
        questions."""
        self.fwd_scale += weight * (verify_s / (self.base + self.slope * fed) - self.fwd_scale)
        self.setup += weight * (draft_s - step_s - self.setup)
        if steps:
            one = step_s / steps * self.draft_step[1] / self.step_cost(seqs)
            self.step += weight * (one - self.step)

    def forward_time(self, n):
        """Seconds of the target's forward over n tokens: the probe's line, scaled as the rounds measured it."""
        return self.fwd_scale * (self.base + self.slope * n)

    def draft_time(self, n):
        """Seconds to draft n tokens: the job's fixed cost gives the first, each step one more."""
        return self.setup + (n - 1) * self.step

    def fits(self, fed):
        """Draft tokens that end within the target's forward over `fed` tokens: more would make it wait."""
        return max(1, 1 + int((self.forward_time(fed) - self.setup) / self.step))

    def gamma(self, sequential=False):
        """sequential: for a round that drafts, then verifies, so that their times add up."""
        if self.rule == "fixed":
            return self.fixed
        if self.rule == "time" and not sequential:
            return self.time_gamma
        # tokens per second rises then falls in g (a concave count over a convex time), so the scan stops at
        # the first fall: a few steps of plain arithmetic, not arrays, since this runs every round
        a, best, best_rate, tokens, reach = self.alpha(), 1, 0.0, 0.0, 1.0
        for g in range(1, self.cap + 1):
            tokens, reach = tokens + reach, reach * a
            f, d = self.forward_time(g), self.draft_time(g)
            rate = tokens / (f + d if sequential else max(f, d))
            if rate < best_rate:
                break
            if rate > best_rate:
                best, best_rate = g, rate
        return best

    def depths(self, gamma):
        """Each sequence's length for k = 1..max sequences: gamma split k ways (upstream), or as deep
        as the measured cost of k sequences per step allows in gamma single-sequence steps."""
        top = max(self.draft_step)
        if self.seq_budget == "split":
            return {k: max(1, gamma // k) for k in range(1, top + 1)}
        return {k: max(1, int(gamma * self.draft_step[1] / self.step_cost(k))) for k in range(1, top + 1)}


def branch_points(odds, base, slots, floor=0.05):
    """Where to branch the next drafts: up to `slots` positions base + i of the pending draft, with the token
    the draft ranked second there, most likely first. Position i is rejected in favour of that token with
    probability about reach_i * p_alt_i, reach_i being the draft's own chance of holding up to i (a
    calibrated draft's estimate); positions under `floor` are not worth a sequence."""
    reach, scored = 1.0, []
    for i, (p_top, alt, p_alt) in enumerate(odds):
        if alt >= 0 and reach * p_alt >= floor:
            scored.append((reach * p_alt, base + i, alt))
        reach *= p_top
    return [(pos, alt) for _, pos, alt in sorted(scored, reverse=True)[:slots]]


# overlap: each side on its own threads at once; sequential and none: one side at a time, so each may take every
# core (the -all modes), where the target's forward and the draft's steps scale with cores
MODES = ("overlap", "sequential", "sequential-all", "none", "none-all")


def mode_priors(budget, a=PRIOR_ACCEPTANCE, spread=True):
    """Tokens per second of each mode before any round has measured it, from the start-up probe's timings
    (each side alone, on its own threads): overlap hides the drafting behind the forward, sequential adds them,
    none is the target alone. The probe does not time every core: an -all mode starts a hair below its
    one-thread twin and is measured when re-measuring comes round (not at all without spread)."""
    def best(sequential):
        rates, tokens, reach = [], 1.0, a
        for g in range(1, budget.cap + 1):
            tokens, reach = tokens + reach, reach * a  # g drafts, then the target's own token
            f, d = budget.forward_time(g + 1), budget.draft_time(g)
            rates.append(tokens / (f + d if sequential else max(f, d)))
        return max(rates)
    priors = {"overlap": best(False), "sequential": best(True), "none": 1.0 / budget.forward_time(1)}
    if spread:
        priors.update({f"{m}-all": 0.999 * priors[m] for m in ("sequential", "none")})
    return priors


class Modes:
    """Which way DuoDecoding runs its next rounds: overlap (the draft drafts while the target verifies), sequential
    (draft, then verify, nothing beside the target's forward, as SpS with a GGUF draft does) or none (the target
    alone, with free candidates). A mode's rate is what its own rounds measured, tokens gained over seconds
    (moving averages; the probe's prior until it has run). The fastest runs. Every other mode is re-measured
    for a few rounds now and then, less often each time it stays behind, so a quiet machine pays little; a
    busy one shows at once in the running mode's own rate. The rates belong to the machine, so they carry
    over between questions; the counts are per question."""

    def __init__(self, priors, forced=None, explore_after=64, explore_rounds=6, weight=0.25, most_apart=1024):
        self.forced, self.weight = forced, weight
        self.explore_after, self.explore_rounds, self.most_apart = explore_after, explore_rounds, most_apart
        self.tokens = {m: float(r) for m, r in priors.items()}  # per second of a unit round until measured
        self.seconds = {m: 1.0 for m in priors}
        self.measured = {m: False for m in priors}
        self.apart = {m: explore_after for m in priors}  # rounds between re-measurements of a mode
        self.waited = {m: 0 for m in priors}
        self.exploring, self.left, self.last = None, 0, None
        self.current = forced or max(priors, key=priors.get)
        self.start_question()

    def start_question(self):
        self.rounds = {m: 0 for m in self.tokens}
        self.switches = []

    def rate(self, mode):
        return self.tokens[mode] / self.seconds[mode]

    def best(self):
        return max(self.tokens, key=self.rate)

    def choose(self):
        """The mode of the next round."""
        if self.forced:
            mode = self.forced
        elif self.exploring:
            mode = self.exploring
            self.left -= 1
            if self.left == 0:
                self.exploring = None
        else:
            best = self.best()
            if best != self.current:
                self.switches.append(f"{self.current} -> {best} at round {sum(self.rounds.values())}: "
                                     f"{self.rate(self.current):.1f} < {self.rate(best):.1f} tokens/s")
                self.apart[self.current] = self.explore_after
                self.current = best
            mode = best
            for m in self.tokens:
                if m == best:
                    continue
                self.waited[m] += 1
                if self.waited[m] >= self.apart[m]:  # re-measure m, then wait twice as long if it stays behind
                    self.waited[m], self.apart[m] = 0, min(2 * self.apart[m], self.most_apart)
                    self.exploring, self.left = m, self.explore_rounds
                    break
        self.rounds[mode] += 1
        return mode

    def observe(self, mode, tokens, seconds):
        """One round of `mode`: it gained `tokens` in `seconds`. The first round after a change of mode does not
        count: it verifies what the other mode drafted."""
        follows, self.last = self.last == mode, mode
        if not follows:
            return
        if not self.measured[mode]:
            self.tokens[mode], self.seconds[mode], self.measured[mode] = float(tokens), float(seconds), True
            return
        self.tokens[mode] += self.weight * (tokens - self.tokens[mode])
        self.seconds[mode] += self.weight * (seconds - self.seconds[mode])

    def as_dict(self):
        return {"mode_rounds": dict(self.rounds), "mode_switches": self.switches[:20],
                "mode_rates": {m: round(self.rate(m), 2) for m in self.tokens}}
