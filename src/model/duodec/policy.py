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

    def gamma(self):
        if self.rule == "fixed":
            return self.fixed
        if self.rule == "time":
            return self.time_gamma
        # tokens per second rises then falls in g (a concave count over a convex time), so the scan stops at
        # the first fall: a few steps of plain arithmetic, not arrays, since this runs every round
        a, best, best_rate, tokens, reach = self.alpha(), 1, 0.0, 0.0, 1.0
        for g in range(1, self.cap + 1):
            tokens, reach = tokens + reach, reach * a
            rate = tokens / max(self.forward_time(g), self.draft_time(g))
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
