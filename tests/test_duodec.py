"""DuoDecoding: lossless (greedy and sampling), the multi-sequence rule, batched drafting, dead workers."""
import argparse
import os
import signal
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from src.backends.draft import Draft
from src.backends.target import Target
from src.model import duodec, method_args
from src.model.base import Cores, Sampling
from tests.lossless import PROMPTS, chi_square, exact_first_tokens, greedy_mismatches, pit_pvalue, \
    sample_first_tokens


CORES = len(os.sched_getaffinity(0))


def args(**kw):
    """The method's defaults (its own parser), with a thread worker and the overlapped pipeline, whose features
    most tests are about, unless a test asks otherwise (--mode auto has its own), on split cores, or shared
    (every core open to each side in its turn) with shared=True."""
    shared = kw.pop("shared", False)
    cores = Cores("shared" if shared else "split", 1, 1, CORES)
    base = vars(method_args("duodec")[1]) | {"worker": "thread", "mode": "overlap", "cores": cores}
    return argparse.Namespace(**(base | kw))


def test_choose_first_tokens_on_hand_made_probabilities():
    p = np.array([0.05, 0.40, 0.30, 0.15, 0.10])
    # theta = 0.40 * 0.5 = 0.2: tokens 2 (0.30) join, 3 (0.15) does not
    assert duodec.choose_first_tokens(p, 0.5, 8) == [1, 2]
    # a confident draft: theta = 0.40 * 0.9 = 0.36 > 0.30, one sequence
    assert duodec.choose_first_tokens(p, 0.9, 8) == [1]
    # an unsure one: theta = 0.04, every token but 0.05 > 0.04... capped at max_seqs
    assert duodec.choose_first_tokens(p, 0.1, 3) == [1, 2, 3]
    assert duodec.choose_first_tokens(p, 0.1, 8) == [1, 2, 3, 4, 0]


def test_batched_sequences_match_drafting_each_alone(tiny):
    path = str(tiny["draft"]) + ".gguf"
    ctx = Target(tiny["draft"]).tokenizer(PROMPTS[0] + PROMPTS[1])["input_ids"]
    branch_at = [(len(ctx) - 3, 7), (len(ctx) - 1, 9)]  # runner-up tokens put at earlier positions
    drafts = duodec.Drafter(Draft(path, n_ctx=256)).run(ctx, 6, 8, force_k=4, branch_at=branch_at, odds=True)
    assert drafts.k == 4 and len(drafts.seqs) == 6 and all(len(s) == 6 for s in drafts.seqs)
    assert drafts.starts == [len(ctx)] * 4 + [pos for pos, _ in branch_at]
    alone_draft = Draft(path, n_ctx=256, n_seq=1)
    for start, seq, odds in zip(drafts.starts, drafts.seqs, drafts.odds):
        # the same first token, then greedy, one sequence at a time
        alone_draft.clear()
        alone_draft.eval(ctx[:start])
        got = [seq[0]]
        logits = alone_draft.eval([seq[0]])
        for i in range(5):
            got.append(int(np.argmax(logits)))
            top, p_top, alt, p_alt = duodec.top_two(logits)[0]
            assert odds[i + 1][0] == pytest.approx(p_top, abs=1e-5) and odds[i + 1][1] == alt
            logits = alone_draft.eval([got[-1]])
        assert got == seq


@pytest.mark.parametrize("variant", [
    dict(no_multiseq=True, gamma="4"),         # k forced to 1 (PEARL with a CPU draft)
    dict(force_seqs=3, gamma="9"),             # k forced to 3 (3 tokens each)
    dict(),                                    # the defaults
    dict(max_seqs=8),                          # the automatic theta rule, auto gamma
    dict(seq_budget="full", gamma="5", catch_up=0),
    dict(gamma_rule="time", catch_up=2),
    dict(verify="tree", force_seqs=3, gamma="9", catch_up=4),  # catch-up sequences verified as a tree
    dict(verify="tree", max_seqs=8, catch_up=4),
    dict(branches=0, lookup_ngram=0),          # neither branches nor free candidates
    dict(branches=4, lookup_ngram=0, worker="process", pin_cores=True),
    dict(mode="sequential"),                   # draft, then verify
    dict(mode="sequential-all", worker="process", shared=True),  # each side on every core in its turn
    dict(mode="none", lookup_ngram=2),         # the target alone with free candidates
    dict(mode="auto"),                         # the CLI's default: the mode its measured costs favour
    dict(mode="auto", shared=True),            # ... with the -all modes open
    dict(mode="auto", max_seqs=8, catch_up=2, worker="process"),
])
def test_greedy_identical_to_ar(tiny, variant):
    target = Target(tiny["target"])
    drafts = {"other": Draft(str(tiny["draft"]) + ".gguf", n_ctx=512),
              "same": Draft(str(tiny["target"]) + ".gguf", n_ctx=512)}
    prompts = [target.tokenizer(p)["input_ids"] for p in PROMPTS]
    for name, draft in drafts.items():
        fwd = duodec.make(args(**variant), target, draft)
        try:
            outs, acc, ks, stops = [], [], {}, set()
            tree_rounds = 0
            for i, p in enumerate(prompts):
                g = fwd(p, 64 if i % 2 else 40, Sampling(), None)
                outs.append(g.token_ids)
                acc += g.accept_lengths
                stops.add(g.stop)
                tree_rounds += g.stats["tree_rounds"]
                for k, v in g.stats["k_hist"].items():
                    ks[k] = ks.get(k, 0) + v
            for i in range(len(prompts)):
                greedy_mismatches(target, prompts[i:i + 1], outs[i:i + 1], 64 if i % 2 else 40, f"{name} {variant}")
            print(name, variant, "mean accepted", round(sum(acc) / len(acc), 2), "k", ks, "stops", stops)
            if name == "same" and variant.get("mode") != "none":  # the draft agrees: first-token checks every round
                assert max(acc) > 2
                if variant.get("force_seqs"):
                    assert set(ks) <= {"1", "3"} and "3" in ks
            if name == "other" and variant.get("force_seqs") and variant.get("verify") == "tree":
                assert tree_rounds > 0  # the unrelated draft is rejected often: catch-up trees happen
        finally:
            fwd.close()


def test_reaches_eos(tiny_vocab):
    """The 16-token target often emits EOS (id 2): greedy outputs that stop early still equal AR's."""
    target = Target(tiny_vocab["target"])
    fwd = duodec.make(args(force_seqs=2, gamma="4"), target, Draft(str(tiny_vocab["draft"]) + ".gguf", n_ctx=512))
    try:
        prompts = [[1] + [3 + (i * 7 + j) % 12 for j in range(1 + i % 5)] for i in range(40)]
        outs = [fwd(p, 30, Sampling(), None) for p in prompts]
        greedy_mismatches(target, prompts, [o.token_ids for o in outs], 30, "eos")
        assert any(o.stop == "eos" for o in outs) and any(o.stop == "length" for o in outs)
    finally:
        fwd.close()


def test_branches_answer_rejections_and_stay_greedy(tiny_vocab):
    """On the 16-token pair the draft's runner-up is often the target's choice: rejections find a branch
    drafted from it ready (no catch-up wait), and the outputs still equal AR's."""
    target = Target(tiny_vocab["target"])
    fwd = duodec.make(args(gamma="6", branches=3, lookup_ngram=0, catch_up=4), target,
                      Draft(str(tiny_vocab["draft"]) + ".gguf", n_ctx=512))
    try:
        prompts = [[1] + [3 + (i * 5 + j) % 12 for j in range(1 + i % 4)] for i in range(30)]
        outs = [fwd(p, 30, Sampling(), None) for p in prompts]
        greedy_mismatches(target, prompts, [o.token_ids for o in outs], 30, "branches")
        hits = sum(o.stats["branch_hits"] for o in outs)
        print("branch hits", hits, "catch-up idle", [o.stats["catch_up_idle_share"] for o in outs][:5])
        assert hits > 0
    finally:
        fwd.close()


@pytest.mark.slow
def test_sampling_matches_ar_distribution(tiny_vocab):
    target = Target(tiny_vocab["target"])
    fwd = duodec.make(args(force_seqs=3, gamma="3"), target, Draft(str(tiny_vocab["draft"]) + ".gguf", n_ctx=512))
    try:
        prompt = [1, 5, 6]
        pval = chi_square(sample_first_tokens(fwd, prompt, 20000), exact_first_tokens(target, prompt))
        print(f"duodec chi-square p = {pval:.3f}")
        assert pval > 0.01
    finally:
        fwd.close()


@pytest.mark.slow
def test_sampling_with_tree_verification_matches_ar_distribution(tiny_vocab):
    target = Target(tiny_vocab["target"])
    fwd = duodec.make(args(force_seqs=3, gamma="3", verify="tree", catch_up=3), target,
                      Draft(str(tiny_vocab["draft"]) + ".gguf", n_ctx=512))
    try:
        prompt = [1, 5, 6]
        gen = torch.Generator().manual_seed(1)
        assert sum(fwd(prompt, 3, Sampling(1.0), gen).stats["tree_rounds"] for _ in range(50)) > 0
        samples = sample_first_tokens(fwd, prompt, 20000)
        pval = chi_square(samples, exact_first_tokens(target, prompt))
        print(f"duodec tree chi-square p = {pval:.3f}")
        assert pval > 0.01
    finally:
        fwd.close()


def test_flatten_puts_sequence_zero_first():
    tokens, parents = duodec.flatten([[5, 6, 7], [8], [9, 10]])
    assert tokens == [5, 6, 7, 8, 9, 10]
    assert parents == [-1, 0, 1, -1, -1, 4]


def test_dead_worker_is_an_error_within_seconds(tiny):
    target = Target(tiny["target"])
    fwd = duodec.make(args(worker="process", gamma="4"), target, Draft(str(tiny["draft"]) + ".gguf", n_ctx=512))
    prompt = target.tokenizer(PROMPTS[0])["input_ids"]
    assert fwd(prompt, 8, Sampling(), None).token_ids
    os.kill(fwd.worker.proc.pid, signal.SIGKILL)
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match="draft worker"):
        fwd(prompt, 64, Sampling(), None)
    assert time.perf_counter() - t0 < 5
    fwd.close()


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_process_worker_spins_only_during_an_answer(tiny):
    """Between answers the worker sleeps: spinning then would take the core of whatever method runs next."""
    target = Target(tiny["target"])
    fwd = duodec.make(args(worker="process", spin_ms=500.0), target, Draft(str(tiny["draft"]) + ".gguf", n_ctx=512))
    try:
        fwd(target.tokenizer(PROMPTS[0])["input_ids"], 16, Sampling(), None)
        before = cpu_seconds(fwd.worker.proc.pid)
        time.sleep(0.6)
        assert cpu_seconds(fwd.worker.proc.pid) - before < 0.1
        fwd.worker.spin(True)  # as during an answer: it polls without sleeping for spin_ms
        fwd.worker.submit(duodec.DraftJob(context=[1, 5, 6], depth=1, max_seqs=1))
        fwd.worker.result()
        before = cpu_seconds(fwd.worker.proc.pid)
        time.sleep(0.3)
        assert cpu_seconds(fwd.worker.proc.pid) - before > 0.1
        fwd.worker.spin(False)
    finally:
        fwd.close()


def test_hung_worker_is_an_error_within_seconds(tiny, monkeypatch):
    target = Target(tiny["target"])
    fwd = duodec.make(args(gamma="4"), target, Draft(str(tiny["draft"]) + ".gguf", n_ctx=512))
    monkeypatch.setattr(duodec.Drafter, "run", lambda *a, **k: time.sleep(30))
    t0 = time.perf_counter()
    prompt = target.tokenizer(PROMPTS[0])["input_ids"]
    with pytest.raises(RuntimeError, match="no answer"):
        fwd(prompt, 8, Sampling(), None)
    assert time.perf_counter() - t0 < duodec.job_timeout(duodec.DraftJob(context=prompt + [0] * 8, depth=1, max_seqs=1)) + 1


def test_a_job_that_reads_a_long_prompt_may_take_longer():
    """A draft that did not prefill beside the target reads the prompt in its first job: thousands of tokens
    may take seconds, and must not pass for a hung worker."""
    short, long = (duodec.DraftJob(context=[1] * n, depth=4, max_seqs=1) for n in (64, 4000))
    assert duodec.job_timeout(short) < duodec.WORKER_TIMEOUT + 2 and duodec.job_timeout(long) > 60


# -- the budget policies, by hand -------------------------------------------------------------------

def test_balance_gamma_by_hand():
    # draft 0.5 ms a step; target 3.0 ms + 0.1 ms a token: 0.5 g >= 3.0 + 0.1 g from g = 7.5
    assert duodec.balance_gamma({1: 0.0005}, {1: 0.0031, 64: 0.0094}) == 8
    assert duodec.balance_gamma({1: 1.0}, {1: 0.001, 8: 0.002}) == 1  # a slow draft: one token
    assert duodec.balance_gamma({1: 1e-9}, {1: 1.0, 8: 2.0}, cap=16) == 16  # a free draft: the cap


def test_acceptance_rule_by_hand():
    # T(g) = 1 + g (fitted exactly), the draft free: rate(g) = (1 - a^g) / (1 - a) / (1 + g)
    b = duodec.Budget("acceptance", None, {1: 1e-9}, {1: 2.0, 2: 3.0, 4: 5.0})
    assert b.alpha() == pytest.approx(0.6) and b.gamma() == 2  # 0.5, 0.533, 0.49 for g = 1, 2, 3
    b.record(33, 30)  # (12 + 33) / (20 + 30) = 0.9: 0.5, 0.633, 0.678, 0.688, 0.683
    assert b.alpha() == pytest.approx(0.9) and b.gamma() == 4
    b.start_question()  # a new question starts from the prior again
    assert b.alpha() == pytest.approx(0.6) and b.gamma() == 2
    assert duodec.Budget("fixed", 7, {1: 1e-9}, {1: 2.0, 2: 3.0}).gamma() == 7


@given(st.floats(0.01, 0.99), st.floats(0.1, 10.0), st.floats(0.0, 1.0), st.floats(0.01, 5.0), st.floats(0.5, 2.0))
@settings(max_examples=300, deadline=None)
def test_acceptance_rule_scan_finds_the_best_gamma(a, base, slope, step, scale):
    """The scan that stops at the first fall picks what an argmax over every gamma picks."""
    b = duodec.Budget("acceptance", None, {1: step}, {1: base + slope, 2: base + 2 * slope}, cap=64)
    c = b.costs["overlap"]
    c.scale, b.accepted, b.verified = scale, a, 1.0
    g = np.arange(1, 65)
    rate = (1 - a ** g) / (1 - a) / np.maximum(scale * (c.base + c.slope * g), g * step)
    best = int(g[np.argmax(rate)])
    assert b.gamma() == best or rate[b.gamma() - 1] == pytest.approx(rate[best - 1], rel=1e-9)


def test_rounds_draft_what_fits_in_their_forward():
    # T(n) = 2 + n ms; a draft job 0.5 ms for its first token, 0.5 ms a step after it: 6 tokens end within
    # a forward over one token, 20 within one over eight
    b = duodec.Budget("fixed", 20, {1: 0.0005}, {1: 0.003, 8: 0.010})
    assert b.fits(1) == 6 and b.fits(8) == 20 and b.gamma() == 20
    # beside the target: a forward over one token takes 6.8 ms, the job 1.5 ms then 1 ms a step
    b.observe(1, 0.0068, 0.0065, 5, 0.005)  # the first measurement replaces the probe's
    c = b.costs["overlap"]
    assert c.scale == pytest.approx(6.8 / 3) and c.setup == pytest.approx(0.0015) and c.step == pytest.approx(0.001)
    b.observe(1, 0.0030, 0.0035, 5, 0.003)  # then a running mean: 6.8 and 3.0 ms
    assert c.scale == pytest.approx(4.9 / 3) and c.setup == pytest.approx(0.001)
    for _ in range(60):
        b.observe(1, 0.0068, 0.0065, 5, 0.005)
    assert b.fits(1) == 6 and b.fits(8) == 22  # 1 + (6.8 - 1.5) / 1 and 1 + (22.7 - 1.5) / 1
    b.observe(1, 0.0068, 0.0015, 0, 0.0)  # no step (cut short, or one token): the step time is kept
    assert c.step == pytest.approx(0.001, rel=1e-3)
    assert b.costs["sequential"].scale == 1.0  # each mode its own costs
    theta = duodec.Budget("fixed", 20, {1: 0.0005, 4: 0.001}, {1: 0.003, 8: 0.010})
    theta.observe(1, 0.003, 0.0045, 4, 0.004, seqs=4)  # 1 ms a step over 4 sequences: 0.5 ms for one
    assert theta.costs["overlap"].step == pytest.approx(0.0005)
    slow = duodec.Budget("fixed", 20, {1: 0.1}, {1: 0.003, 8: 0.010})
    assert slow.fits(1) == 1  # at least one token, however slow the draft


def test_depths_by_hand():
    steps = {1: 0.001, 2: 0.0015, 4: 0.002, 8: 0.004}
    split = duodec.Budget("fixed", 12, steps, {1: 1.0, 2: 2.0}, "split").depths(12)
    assert split == {1: 12, 2: 6, 3: 4, 4: 3, 5: 2, 6: 2, 7: 1, 8: 1}
    full = duodec.Budget("fixed", 12, steps, {1: 1.0, 2: 2.0}, "full").depths(12)
    assert full[1] == 12 and full[2] == 8 and full[4] == 6 and full[8] == 3  # 12 steps of k = 1 in the same time


def test_branch_points_on_hand_made_odds():
    # (p_top, runner-up, p_runner-up) per pending token; reach: 1, 0.9, 0.45, 0.36
    odds = [(0.9, 11, 0.05), (0.5, 12, 0.4), (0.8, 13, 0.1), duodec.drafter.NOT_TOP]
    # weights: 0.05, 0.36, 0.045 (under the floor), none
    assert duodec.branch_points(odds, 100, 2) == [(101, 12), (100, 11)]
    assert duodec.branch_points(odds, 100, 1) == [(101, 12)]
    assert duodec.branch_points(odds, 100, 0) == []
    assert duodec.branch_points(odds, 100, 4, floor=0.01) == [(101, 12), (100, 11), (102, 13)]


def test_continuation_picks_the_sequence_that_agrees():
    context = [1, 2, 3, 4, 5]  # 4, 5 were pending
    d = duodec.Drafts(seqs=[[6, 7, 8], [9, 10], [20, 21, 22]], starts=[5, 5, 3], k=2,
                      odds=[[(1, -1, 0)] * 3, [(1, -1, 0)] * 2, [(0.5, 30, 0.3), (0.6, 31, 0.2), (0.7, 32, 0.1)]])
    assert d.continuation(context, [1, 2, 3, 4, 5, 6])[0] == [7, 8]        # all held, top-1 accepted
    assert d.continuation(context, [1, 2, 3, 4, 5, 9])[0] == [10]          # all held, sequence 1 accepted
    assert d.continuation(context, [1, 2, 3, 4, 5, 11])[0] == []           # no candidate accepted
    got = d.continuation(context, [1, 2, 3, 20])                           # 4 rejected, 20 in its place
    assert got == ([21, 22], [(0.6, 31, 0.2), (0.7, 32, 0.1)])
    assert d.continuation(context, [1, 2, 3, 4, 20])[0] == []              # the branch sits elsewhere
    assert d.continuation(context, [1, 2, 9, 20])[0] == []                 # disagrees before the branch


def test_theta_rule_drafts_several_sequences_when_unsure(tiny_vocab):
    """A draft with soft distributions (16 tokens): the second-ranked first token often beats
    theta = p(1st) * p(2nd), so the automatic rule drafts k > 1 sequences without being forced."""
    drafter = duodec.Drafter(Draft(str(tiny_vocab["draft"]) + ".gguf", n_ctx=256))
    ks = [drafter.run([1] + [3 + (i * 5 + j) % 12 for j in range(3)], 6, 8).k for i in range(12)]
    assert max(ks) > 1, ks


@pytest.mark.slow
@pytest.mark.parametrize("variant", [dict(force_seqs=3, gamma="4", branches=0), dict(gamma="4", catch_up=0, max_seqs=8),
                                     dict(gamma="6", branches=3, lookup_ngram=2, catch_up=4)],
                         ids=["k=3 forced", "theta rule", "branches and free candidates"])
def test_sampling_over_pipelined_rounds(tiny_vocab, variant):
    """Sampled outputs of 8 tokens, many rounds each (pre- and post-verify, catch-up, branches, looked-up
    candidates), follow AR's distribution at every position."""
    target = Target(tiny_vocab["target"])
    fwd = duodec.make(args(**variant), target, Draft(str(tiny_vocab["draft"]) + ".gguf", n_ctx=512))
    try:
        prompt, gen, outs, ks, rounds, hits, free = [1, 5, 6], torch.Generator().manual_seed(3), [], {}, 0, 0, 0
        for _ in range(1500):
            g = fwd(prompt, 8, Sampling(1.0), gen)
            outs.append(g.token_ids)
            rounds += g.decoding_steps
            hits += g.stats["branch_hits"]
            free += g.stats["free_rounds"]
            for k, v in g.stats["k_hist"].items():
                ks[k] = ks.get(k, 0) + v
        assert rounds > 2 * len(outs), rounds
        if variant.get("branches"):
            assert hits > 30 and free > 30, (hits, free)  # corrections land on branches; n-grams recur
        else:
            assert any(int(k) > 1 for k in ks), ks
        pval, n = pit_pvalue(target, prompt, outs, 8)
        print(f"duodec {variant}: {n} tokens, k {ks}, branch hits {hits}, free rounds {free}, PIT chi-square p = {pval:.3f}")
        assert n > 5000 and pval > 0.01
    finally:
        fwd.close()


def test_mode_rates_by_hand():
    """Forward 10 ms flat, draft 1 ms a token, acceptance 0.5 (fixed gamma 4). Sequential: (1 + ... + 0.5^4)
    tokens in 4 + 10 ms. Overlap: full rounds max(10, 4) ms, empty ones 10 ms; a full round stays full with
    probability 0.5^5. None: one token a forward. Every core: forward 6 ms, draft 0.5 ms a token."""
    b = duodec.Budget("fixed", 4, {1: 0.001}, {1: 0.010, 64: 0.010}, every_core=({1: 0.0005}, {1: 0.006, 16: 0.006}))
    b.accepted, b.verified = 0.5, 1.0
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
    b = duodec.Budget("acceptance", None, {1: 0.001}, {1: 0.0052, 9: 0.0068},
                      every_core=({1: 0.00095}, {1: 0.00494, 9: 0.00646}))
    b.accepted, b.verified, b.pair = 0.8, 1.0, [0.8, 1.0]
    return b


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
        fwd, draft = scale * (c.base + c.slope * fed), 0.0 if kind == "none" else g * step
        budget.observe(fed, fwd, draft, g - 1, (g - 1) * step)
        budget.observe_rest(rest)
        seconds = fwd + rest + (draft if kind == "sequential" else max(0.0, draft - fwd))
        modes.observe(mode, budget.best()[1] * seconds, seconds)
        picked.append(mode)
    return picked


ALONE, EVERY = (1.0, 0.001, 0.0), (1.0, 0.00095, 0.0)
QUIET = {"overlap": ALONE, "sequential": ALONE, "none": ALONE, "sequential-all": EVERY, "none-all": EVERY}


def test_modes_choose_by_measured_costs_and_re_measure_less_often():
    b = hand_budget()
    modes = duodec.Modes(b, explore_after=8, explore_rounds=3, every=1)
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
    modes = duodec.Modes(b, every=1)
    assert modes.current == "sequential-all"
    picked = run_rounds(modes, b, 100, {"overlap": (1.05, 0.075, 0.001), "sequential": (1.0, 0.069, 0.001),
                                        "sequential-all": (1.0, 0.038, 0.001), "none": (1.0, 0, 0),
                                        "none-all": (1.0, 0, 0)})
    assert picked.count("sequential-all") >= 84 and not modes.switches  # 4 rounds of each other mode at 64


def test_forced_mode_is_kept():
    b = hand_budget()
    modes = duodec.Modes(b, forced="none", explore_after=2, every=1)
    assert set(run_rounds(modes, b, 50, QUIET)) == {"none"}


