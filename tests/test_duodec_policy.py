"""DuoDecoding's policy (src/model/duodec/policy.py) on hand-made timings: gamma and depths (Budget), the mode
scheduler (Modes), driven through their public verbs as the loop drives them."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from src.model import duodec


def at_acceptance(budget, a):
    """The budget after 80 tokens on top of its prior (0.6 over 20), at acceptance a for the question and the pair."""
    budget.record(a * 100 - 12, 80)
    return budget


def test_forward_cost_keeps_one_tokens_own_time():
    """One token's forward as probed; more tokens on the line through the other sizes; scaled by what rounds
    measure. A probe of two sizes is one line."""
    c = duodec.Costs({1: 0.05}, {1: 0.5, 2: 1.1, 4: 1.2, 8: 1.8})
    assert c.forward(1) == pytest.approx(0.5) and c.forward(4) == pytest.approx(0.8 + 4 * 0.1214, abs=1e-3)
    assert c.forward(16) > c.forward(8) > c.forward(2) > 1.0
    c.observe_forward(1, 1.0)  # the first measurement sets the scale
    assert c.forward(1) == pytest.approx(1.0) and c.forward(2) == pytest.approx(2 * c.probe(2))
    line = duodec.Costs({1: 0.05}, {1: 2.0, 3: 4.0})
    assert [line.forward(n) for n in (1, 2, 5)] == pytest.approx([2.0, 3.0, 6.0])


def test_acceptance_rule_by_hand():
    # T(g) = 1 + g (fitted exactly), the draft free: rate(g) = (1 - a^g) / (1 - a) / (1 + g)
    b = duodec.Budget("acceptance", None, {1: 1e-9}, {1: 2.0, 2: 3.0, 4: 5.0})
    assert b.alpha() == pytest.approx(0.6) and b.gamma() == 2  # 0.5, 0.533, 0.49 for g = 1, 2, 3
    b.record(33, 30)  # (12 + 33) / (20 + 30) = 0.9: 0.5, 0.633, 0.678, 0.688, 0.683
    assert b.alpha() == pytest.approx(0.9) and b.gamma() == 4
    b.start_question()  # a new question starts from the prior again
    assert b.alpha() == pytest.approx(0.6) and b.gamma() == 2
    assert duodec.Budget("fixed", 7, {1: 1e-9}, {1: 2.0, 2: 3.0}).gamma() == 7


@given(st.floats(0.01, 0.99), st.floats(0.1, 10.0), st.floats(0.0, 1.0), st.floats(0.01, 5.0), st.floats(0.5, 2.0),
       st.floats(0.1, 1.0))
@settings(max_examples=300, deadline=None)
def test_acceptance_rule_scan_finds_the_best_gamma(a, base, slope, step, scale, bend):
    """The scan that stops at the first fall picks what an argmax over every gamma picks, on the line through the
    probe: one token's own time (`bend` of the line's), however low, does not price a round of drafts."""
    b = duodec.Budget("acceptance", None, {1: step}, {1: bend * (base + slope), 2: base + 2 * slope,
                                                       4: base + 4 * slope})
    c = b.costs["overlap"]
    at_acceptance(b, a)
    b.observe_forward(2, scale * c.forward(2))  # the first measurement sets the scale
    g = np.arange(1, 65)
    rate = (1 - a ** g) / (1 - a) / np.maximum(scale * (base + slope * g), g * step)
    best = int(g[np.argmax(rate)])
    assert b.gamma() == best or rate[b.gamma() - 1] == pytest.approx(rate[best - 1], rel=1e-6)


def test_one_tokens_cheap_forward_does_not_hold_gamma_at_one():
    """A forward of one token at a third of the line's (matrix-vector kernels) once made the scan fall from
    gamma 1 to 2 and stop there, in every mode. Rounds of drafts feed two tokens or more: they are priced on
    the line."""
    b = at_acceptance(duodec.Budget("acceptance", None, {1: 0.01}, {1: 0.1, 2: 0.3, 4: 0.34, 8: 0.42}), 0.9)
    for mode in ("overlap", "sequential"):
        b.run_in(mode)
        assert b.gamma() > 4, mode


def test_looked_up_tokens_are_sized_by_the_forward_and_their_acceptance():
    # the draft free; a forward flat in its tokens takes all 10, whatever their acceptance
    flat = duodec.Budget("fixed", 4, {1: 1e-9}, {1: 0.3, 16: 0.3})
    assert flat.lookups(1, 0, 10) == 10 and flat.lookups(4, 3, 10) == 10
    # T(n) = 1 + n: a looked-up token pays only while its chance of being kept beats what the round gains a second
    steep = duodec.Budget("fixed", 4, {1: 1e-9}, {1: 2.0, 4: 5.0})
    assert steep.lookup_alpha() == pytest.approx(0.5)
    assert steep.lookups(1, 0, 10) == 0  # 1 / 2 against (1 + 0.5) / 3: no gain, so no token
    steep.record_lookup(80, 80)  # (5 + 80) / 90: the question's looked-up tokens mostly held
    assert steep.lookups(1, 0, 10) == 5  # (1 + b + .. + b^n) / (2 + n) peaks at n = 5
    assert steep.lookups(1, 0, 3) == 3 and steep.lookups(4, 3, 10) == 0  # after 3 drafts, reached 0.6^3 of the time
    steep.start_question()  # a new question starts from the prior again
    assert steep.lookup_alpha() == pytest.approx(0.5)
    assert steep.lookups(1, 0, 0) == 0
    # one token's forward far under the line through the others (fp32 on AVX2: 0.75 s, then about 2 s): the first
    # looked-up token costs most, so either none or many
    bent = duodec.Budget("fixed", 4, {1: 1e-9}, {1: 0.75, 2: 2.0, 4: 2.15, 8: 2.45})
    assert bent.lookups(1, 0, 10) == 0  # half of them kept: 1 / 0.75 s beats any length
    bent.record_lookup(80, 90)  # (5 + 80) / 100
    assert bent.lookups(1, 0, 10) == 10  # 5.5 tokens in 2.7 s


@given(st.floats(0.01, 0.99), st.floats(0.01, 0.99), st.floats(0.1, 10.0), st.floats(0.0, 1.0),
       st.floats(0.1, 1.0), st.integers(0, 8), st.integers(0, 16))
@settings(max_examples=300, deadline=None)
def test_lookup_scan_finds_the_best_length(a, b, base, slope, one, drafted, most):
    """The scan that stops at the first fall picks what an argmax over every length picks: expected tokens (the
    pending draft's, then looked-up ones reached if it holds) over the forward's time, one token's forward a
    share `one` of the line's (so the rate may fall from no looked-up token to one, then rise)."""
    line = lambda n: base + slope * n
    budget = duodec.Budget("fixed", 4, {1: 1e-9}, {1: one * line(1), 2: line(2), 4: line(4)})
    at_acceptance(budget, a)
    budget.record_lookup(b * 100 - 5, 90)  # (5 + 100 b - 5) / (10 + 90)
    c, fed = budget.costs["overlap"], 1 + drafted
    n = np.arange(0, most + 1)
    tokens = (1 - a ** (drafted + 1)) / (1 - a) + a ** drafted * np.array([sum(b ** i for i in range(1, k + 1)) for k in n])
    rate = tokens / np.array([c.probe(fed + k) for k in n])
    got = budget.lookups(fed, drafted, most)
    assert got == int(np.argmax(rate)) or rate[got] == pytest.approx(rate.max(), rel=1e-6)


def observe(budget, fed, forward_s, draft_s, steps, step_s, seqs=1):
    """One round's hand-made timings, as the loop reports them: the forward, then the draft job."""
    budget.observe_forward(fed, forward_s)
    budget.observe_job(duodec.Drafts([[0]] * seqs, [0] * seqs, seqs, steps, step_s), draft_s)


def test_rounds_draft_what_fits_in_their_forward():
    # T(n) = 2 + n ms; a draft job 0.5 ms for its first token, 0.5 ms a step after it: 6 tokens end within
    # a forward over one token, 20 within one over eight
    b = duodec.Budget("fixed", 20, {1: 0.0005}, {1: 0.003, 8: 0.010})
    assert b.fits(1) == 6 and b.fits(8) == 20 and b.gamma() == 20
    # beside the target: a forward over one token takes 6.8 ms, the job 1.5 ms then 1 ms a step
    observe(b, 1, 0.0068, 0.0065, 5, 0.005)  # the first measurement replaces the probe's
    c = b.costs["overlap"]
    assert c.scale == pytest.approx(6.8 / 3) and c.setup == pytest.approx(0.0015) and c.step == pytest.approx(0.001)
    observe(b, 1, 0.0030, 0.0035, 5, 0.003)  # then a running mean: 6.8 and 3.0 ms
    assert c.scale == pytest.approx(4.9 / 3) and c.setup == pytest.approx(0.001)
    for _ in range(60):
        observe(b, 1, 0.0068, 0.0065, 5, 0.005)
    assert b.fits(1) == 6 and b.fits(8) == 22  # 1 + (6.8 - 1.5) / 1 and 1 + (22.7 - 1.5) / 1
    observe(b, 1, 0.0068, 0.0015, 0, 0.0)  # no step (cut short, or one token): the step time is kept
    assert c.step == pytest.approx(0.001, rel=1e-3)
    assert b.costs["sequential"].scale == 1.0  # each mode its own costs
    theta = duodec.Budget("fixed", 20, {1: 0.0005, 4: 0.001}, {1: 0.003, 8: 0.010})
    observe(theta, 1, 0.003, 0.0045, 4, 0.004, seqs=4)  # 1 ms a step over 4 sequences: 0.5 ms for one
    assert theta.costs["overlap"].step == pytest.approx(0.0005)
    slow = duodec.Budget("fixed", 20, {1: 0.1}, {1: 0.003, 8: 0.010})
    assert slow.fits(1) == 1  # at least one token, however slow the draft


def test_depths_by_hand():
    steps = {1: 0.001, 2: 0.0015, 4: 0.002, 8: 0.004}
    split = duodec.Budget("fixed", 12, steps, {1: 1.0, 2: 2.0}).depths(12)
    assert split == {1: 12, 2: 6, 3: 4, 4: 3, 5: 2, 6: 2, 7: 1, 8: 1}


def test_mode_rates_by_hand():
    """Forward 10 ms flat, draft 1 ms a token, acceptance 0.5 (fixed gamma 4). Sequential: (1 + ... + 0.5^4)
    tokens in 4 + 10 ms. Overlap: full rounds max(10, 4) ms, empty ones 10 ms; a full round stays full with
    probability 0.5^5. None: one token a forward. Every core: forward 6 ms, draft 0.5 ms a token."""
    b = at_acceptance(duodec.Budget("fixed", 4, {1: 0.001}, {1: 0.010, 64: 0.010},
                                    every_core=({1: 0.0005}, {1: 0.006, 16: 0.006})), 0.5)
    tokens = sum(0.5 ** i for i in range(5))
    assert b.best("sequential") == (4, pytest.approx(tokens / 0.014))
    assert b.best("sequential-all")[1] == pytest.approx(tokens / 0.008)
    assert b.best("none")[1] == pytest.approx(100.0) and b.best("none-all")[1] == pytest.approx(1 / 0.006)
    full, empty = 0.010, 0.010
    assert b.best("overlap")[1] == pytest.approx(2 / (0.5 * full / (1 - 0.5 ** 5) + empty))
    assert duodec.overlap_rate(0.5, full, empty, 4) == pytest.approx(b.best("overlap")[1])
    # the chain's rate is what a simulated pipeline of such rounds gains per second
    rng, t, n, full_now = np.random.default_rng(0), 0.0, 0, False
    for _ in range(200_000):
        if full_now:
            draws = rng.random(5) < 0.5
            held = 5 if draws.all() else int(np.argmin(draws))  # accepted drafts, then the post-verify token
            n, t, full_now = n + min(held, 4) + 1, t + full, held == 5
        else:
            n, t, full_now = n + 1, t + empty, rng.random() < 0.5
    assert n / t == pytest.approx(b.best("overlap")[1], rel=0.02)
    # the rest of a round (Python, messages) counts in every mode's time
    b.costs["none"].observe_rest(0.010)
    assert b.best("none")[1] == pytest.approx(50.0)


def hand_budget():
    """A machine where overlap wins: forward 5 ms + 0.2 ms a token, draft 1 ms a step, every core 5 % faster."""
    return at_acceptance(duodec.Budget("acceptance", None, {1: 0.001}, {1: 0.0052, 9: 0.0068},
                                       every_core=({1: 0.00095}, {1: 0.00494, 9: 0.00646})), 0.8)


def run_rounds(modes, budget, n, costs):
    """n rounds in the modes `modes` chooses, each measuring `costs[mode]` = (the forward's time over the
    probe's, the draft's step in seconds, the rest of the round in seconds)."""
    picked = []
    for _ in range(n):
        mode = modes.choose()
        budget.run_in(mode)
        g, c, kind = budget.gamma(), budget.now, mode.removesuffix("-all")
        scale, step, rest = costs[mode]
        fed = 1 if kind == "none" else g + 1
        fwd, draft = scale * c.probe(fed), 0.0 if kind == "none" else g * step
        observe(budget, fed, fwd, draft, g - 1, (g - 1) * step)
        budget.observe_rest(rest)
        seconds = fwd + rest + (draft if kind == "sequential" else max(0.0, draft - fwd))
        modes.observe(mode, budget.best()[1] * seconds, seconds)
        picked.append(mode)
    return picked


ALONE, EVERY = (1.0, 0.001, 0.0), (1.0, 0.00095, 0.0)
QUIET = {"overlap": ALONE, "sequential": ALONE, "none": ALONE, "sequential-all": EVERY, "none-all": EVERY}


def test_modes_choose_by_measured_costs_and_re_measure_less_often():
    b = hand_budget()
    modes = duodec.Modes(b, tune=duodec.Tunables(explore_after=8, explore_rounds=3, every=1))
    assert modes.current == "overlap"  # the probe's costs: overlap hides the drafting
    picked = run_rounds(modes, b, 200, QUIET)
    assert picked.count("overlap") > 150 and not modes.switches
    assert {"sequential", "none"} <= set(picked)  # re-measured now and then
    assert picked.index("sequential") >= 6  # not before explore_after rounds
    assert modes.apart["sequential"] > 8 and picked.count("none") < picked.count("sequential")  # none: far behind
    # a busy machine: beside the draft the target's forward and the draft's steps take 3x (both sides contend),
    # alone each keeps its speed, on every core both crawl
    busy = dict(QUIET, overlap=(3.0, 0.003, 0.002), **{"sequential-all": (8.0, 0.01, 0.0), "none-all": (8.0, 0.01, 0.0)})
    picked = run_rounds(modes, b, 20, busy)
    assert picked[-1] == "sequential" and "overlap -> sequential" in modes.switches[0]
    picked = run_rounds(modes, b, 600, busy)
    assert picked.count("sequential") > 540 and "overlap" in picked  # overlap is re-measured, stays behind
    picked = run_rounds(modes, b, 1200, QUIET)  # the load is gone: overlap wins back when next re-measured
    assert picked[-1] == "overlap" and modes.switches[-1].split(" at ")[0].endswith("-> overlap")
    stats = modes.as_dict()
    assert stats["mode_rounds"]["sequential"] > 500 and stats["mode_costs_ms"]["overlap"]["forward_1"] == pytest.approx(5.2)


def test_modes_take_every_core_where_both_sides_scale():
    """The real pair on two cores: every core makes the target's forward 1.8x faster and the draft's steps 1.8x;
    drafting while verifying gains less than that."""
    b = duodec.Budget("acceptance", None, {1: 0.069}, {1: 0.33, 16: 0.34}, every_core=({1: 0.038}, {1: 0.19, 16: 0.2}))
    modes = duodec.Modes(b, tune=duodec.Tunables(every=1))
    assert modes.current == "sequential-all"
    picked = run_rounds(modes, b, 100, {"overlap": (1.05, 0.075, 0.001), "sequential": (1.0, 0.069, 0.001),
                                        "sequential-all": (1.0, 0.038, 0.001), "none": (1.0, 0, 0),
                                        "none-all": (1.0, 0, 0)})
    assert picked.count("sequential-all") >= 84 and not modes.switches  # 4 rounds of each other mode at 64


def test_forced_mode_is_kept():
    b = hand_budget()
    modes = duodec.Modes(b, forced="none", tune=duodec.Tunables(explore_after=2, every=1))
    assert set(run_rounds(modes, b, 50, QUIET)) == {"none"}


def test_auto_catch_up_drafts_what_a_sequential_round_would():
    """A cheap draft beside a flat forward: after a rejection the pipeline restarts with SpS's round, and the overlap
    mode's rate counts that round as its empty one."""
    costs = ({1: 0.02}, {1: 0.25, 2: 0.25, 4: 0.26, 8: 0.28, 16: 0.32})
    auto = duodec.Budget("acceptance", None, *costs, catch_up="auto")
    none = duodec.Budget("acceptance", None, *costs)
    assert auto.catch_up_len() == auto.best("sequential")[0] > 2 and none.catch_up_len() == 0
    assert auto.best("overlap")[1] > none.best("overlap")[1]
