"""DuoDecoding: lossless (greedy and sampling), the multi-sequence rule, batched drafting, dead workers."""
import argparse
import os
import signal
import time

import numpy as np
import pytest
import torch

from src.backends.draft import Draft
from src.backends.target import Target
from src.model import duodec, method_args
from src.model.base import Cores, Sampling
from tests.lossless import ALPHA, PROMPTS, chi_square, exact_first_tokens, greedy_mismatches, pit_pvalue, \
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


def test_batched_sequences_match_drafting_each_alone(tiny):
    path = str(tiny["draft"]) + ".gguf"
    ctx = Target(tiny["draft"]).tokenizer(PROMPTS[0] + PROMPTS[1])["input_ids"]
    job = duodec.DraftJob(context=ctx, depth=6, max_seqs=8, force_k=4)
    drafts = duodec.Drafter(Draft(path, n_ctx=256)).run(job)
    assert drafts.k == 4 and len(drafts.seqs) == 4 and all(len(s) == 6 for s in drafts.seqs)
    assert drafts.starts == [len(ctx)] * 4 and drafts.steps == 5
    alone_draft = Draft(path, n_ctx=256, n_seq=1)
    for seq in drafts.seqs:
        # the same first token, then greedy, one sequence at a time
        alone_draft.clear()
        alone_draft.eval(ctx)
        got = [seq[0]]
        logits = alone_draft.eval([seq[0]])
        for _ in range(5):
            got.append(int(np.argmax(logits)))
            logits = alone_draft.eval([got[-1]])
        assert got == seq


def test_the_default_restarts_a_drained_pipeline_with_a_chain(tiny):
    """After a rejection the default waits for an SpS-sized catch-up draft (the target idles for it), so the next
    forward verifies a chain; --catch-up 0, the paper's pre-verify round, never waits. Both stay identical to AR."""
    target = Target(tiny["target"])
    prompts = [target.tokenizer(p)["input_ids"] for p in PROMPTS]
    idle = {}
    for catch_up in ("auto", 0):
        kw = {} if catch_up == "auto" else {"catch_up": 0}
        assert duodec.Config.from_args(args(**kw)).catch_up == catch_up
        fwd = duodec.make(args(**kw), target, Draft(str(tiny["draft"]) + ".gguf", n_ctx=512))
        try:
            outs = [fwd(p, 40, Sampling(), None) for p in prompts]
        finally:
            fwd.close()
        greedy_mismatches(target, prompts, [o.token_ids for o in outs], 40, f"catch_up={catch_up}")
        idle[catch_up] = sum(o.stats["catch_up_idle_share"] for o in outs)
    assert idle["auto"] > 0 and idle[0] == 0, idle


@pytest.mark.parametrize("variant", [
    dict(gamma="4"),                           # one sequence, a fixed gamma (PEARL with a CPU draft)
    dict(force_seqs=3, gamma="9"),             # k forced to 3 (3 tokens each)
    dict(),                                    # the defaults
    dict(max_seqs=8),                          # the automatic theta rule, auto gamma
    dict(gamma_rule="time", catch_up=2),
    dict(force_seqs=3, gamma="9", catch_up=4),  # k forced beside the forward, one catch-up sequence after a rejection
    dict(lookup_ngram=0),                      # no free candidates
    dict(lookup_ngram=0, worker="process"),
    dict(catch_up="auto"),                     # an SpS round after a rejection
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
            for i, p in enumerate(prompts):
                g = fwd(p, 64 if i % 2 else 40, Sampling(), None)
                outs.append(g.token_ids)
                acc += g.accept_lengths
                stops.add(g.stop)
                for k, v in g.stats["k_hist"].items():
                    ks[k] = ks.get(k, 0) + v
            for i in range(len(prompts)):
                greedy_mismatches(target, prompts[i:i + 1], outs[i:i + 1], 64 if i % 2 else 40, f"{name} {variant}")
            print(name, variant, "mean accepted", round(sum(acc) / len(acc), 2), "k", ks, "stops", stops)
            if name == "same" and variant.get("mode") != "none":  # the draft agrees: first-token checks every round
                assert max(acc) > 2
                if variant.get("force_seqs"):
                    assert set(ks) <= {"1", "3"} and "3" in ks
        finally:
            fwd.close()


def test_a_draft_slow_to_read_the_prompt_does_not_hold_the_target(tiny, monkeypatch):
    """Where the draft reads the prompt slower than the target (its fewer cores), the target goes on with its own
    tokens meanwhile: the first token comes before the read ends, the output is still AR's, and the next answers
    draft as usual (the read was collected, not taken for their drafts). --wait-for-prompt waits, as upstream."""
    target = Target(tiny["target"])
    prompts = [target.tokenizer(p)["input_ids"] for p in PROMPTS]
    run = duodec.DraftJob.run

    def slow_read(job, drafter, cancel):
        if list(job.context) == prompts[0]:
            time.sleep(0.3)
        return run(job, drafter, cancel)
    monkeypatch.setattr(duodec.DraftJob, "run", slow_read)
    for wait in (False, True):
        fwd = duodec.make(args(wait_for_prompt=wait, gamma="4"), target, Draft(str(tiny["target"]) + ".gguf", n_ctx=512))
        try:
            outs = [fwd(p, 160, Sampling(), None) for p in prompts]
        finally:
            fwd.close()
        greedy_mismatches(target, prompts, [g.token_ids for g in outs], 160, f"wait_for_prompt={wait}")
        assert (outs[0].ttft < 0.15) if not wait else (outs[0].ttft >= 0.3), (wait, outs[0].ttft)
        assert max(a for g in outs[1:] for a in g.accept_lengths) > 2  # the draft (the target's twin) drafts


def test_looked_up_tokens_ride_after_the_pending_draft(tiny, monkeypatch):
    """Looked-up tokens verified after the pending draft: right ones gain what the draft has not reached (the
    draft's job still continues the pending draft, and its sequence that agrees becomes the next pending);
    wrong ones cost nothing but the forward's extra tokens. The output is AR's
    either way. The lookup is replaced by an oracle (AR's own continuation, or that shifted by one id), since a
    random model's output seldom repeats."""
    from src.model.duodec import loop
    target = Target(tiny["target"])
    prompts = [target.tokenizer(p)["input_ids"] for p in PROMPTS[:8]]
    draft = Draft(str(tiny["target"]) + ".gguf", n_ctx=512)  # the target's twin: the pending draft holds
    truths = []

    def oracle(shift):
        def lookup(index, seq, n, tail=()):
            whole = list(seq) + list(tail)
            truth = next(t for t in truths if t[:len(seq)] == list(seq))
            if not tail or truth[:len(whole)] != whole:
                return []
            return [(t + shift) % 256 for t in truth[len(whole):len(whole) + n]]
        return lookup

    runs = {}
    for name, shift in (("off", None), ("right", 0), ("wrong", 1)):
        if shift is not None:
            monkeypatch.setattr(loop, "free_candidates", oracle(shift))
        # drafts of gamma tokens and the prompt read before round 2: rounds that no timing changes
        fwd = duodec.make(args(gamma="3", no_fit=True, wait_for_prompt=True, no_lookup_extend=shift is None),
                          target, draft)
        try:
            outs = [fwd(p, 48, Sampling(), None) for p in prompts]
        finally:
            fwd.close()
        greedy_mismatches(target, prompts, [g.token_ids for g in outs], 48, f"looked-up tokens {name}")
        truths = truths or [p + g.token_ids for p, g in zip(prompts, outs)]
        runs[name] = (sum(g.stats["free_accepted"] for g in outs), sum(g.decoding_steps for g in outs))
    print("free tokens, rounds", runs)
    assert runs["right"][0] > 0 and runs["right"][1] < runs["off"][1]
    assert runs["wrong"][0] == 0 and runs["wrong"][1] == runs["off"][1]


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


@pytest.mark.slow
def test_sampling_matches_ar_distribution(tiny_vocab):
    target = Target(tiny_vocab["target"])
    fwd = duodec.make(args(force_seqs=3, gamma="3"), target, Draft(str(tiny_vocab["draft"]) + ".gguf", n_ctx=512))
    try:
        prompt = [1, 5, 6]
        pval = chi_square(sample_first_tokens(fwd, prompt, 20000), exact_first_tokens(target, prompt))
        print(f"duodec chi-square p = {pval:.3f}")
        assert pval > ALPHA
    finally:
        fwd.close()


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


def test_process_worker_sleeps_between_answers(tiny):
    """Between answers the worker waits without a core: busy, it would take the core of the method that runs next."""
    target = Target(tiny["target"])
    fwd = duodec.make(args(worker="process"), target, Draft(str(tiny["draft"]) + ".gguf", n_ctx=512))
    try:
        fwd(target.tokenizer(PROMPTS[0])["input_ids"], 16, Sampling(), None)
        before = cpu_seconds(fwd.worker.proc.pid)
        time.sleep(0.6)
        assert cpu_seconds(fwd.worker.proc.pid) - before < 0.1
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


def test_continuation_picks_the_sequence_that_agrees():
    context = [1, 2, 3, 4, 5]  # 4, 5 were pending
    d = duodec.Drafts(seqs=[[6, 7, 8], [9, 10]], starts=[5, 5], k=2)
    assert d.continuation(context, [1, 2, 3, 4, 5, 6]) == ([7, 8], [None, None])  # all held, top-1 accepted
    assert d.continuation(context, [1, 2, 3, 4, 5, 9])[0] == [10]          # all held, sequence 1 accepted
    assert d.continuation(context, [1, 2, 3, 4, 5, 11])[0] == []           # no candidate accepted
    assert d.continuation(context, [1, 2, 3, 20])[0] == []                 # 4 rejected: nothing drafted from 20
    drawn = duodec.Drafts(seqs=[[6, 7, 8]], starts=[5], k=1, q=[["q6", "q7", "q8"]])
    assert drawn.continuation(context, [1, 2, 3, 4, 5, 6]) == ([7, 8], ["q7", "q8"])  # rows travel along


def test_theta_rule_drafts_several_sequences_when_unsure(tiny_vocab):
    """A draft with soft distributions (16 tokens): the second-ranked first token often beats
    theta = p(1st) * p(2nd), so the automatic rule drafts k > 1 sequences without being forced."""
    drafter = duodec.Drafter(Draft(str(tiny_vocab["draft"]) + ".gguf", n_ctx=256))
    ks = [drafter.run(duodec.DraftJob(context=[1] + [3 + (i * 5 + j) % 12 for j in range(3)], depth=6, max_seqs=8)).k
          for i in range(12)]
    assert max(ks) > 1, ks


def test_drawn_chain_follows_the_drafts_distribution(tiny_vocab):
    """Under sampling the drafter draws each token from the row it returns (chi-square over seeds), and that row
    is the draft's distribution after the temperature."""
    from scipy.stats import chisquare
    from src.verify import logits_to_probs
    draft = Draft(str(tiny_vocab["draft"]) + ".gguf", n_ctx=256)
    drafter, ctx = duodec.Drafter(draft), [1, 5, 6]
    counts, q = np.zeros(draft.n_vocab), None
    for seed in range(3000):
        drafts = drafter.run(duodec.DraftJob(context=ctx, depth=2, max_seqs=1, sample=(0.7, 0, 1.0, seed)))
        assert len(drafts.seqs[0]) == 2 and len(drafts.q[0]) == 2
        q = drafts.q[0][0]
        counts[drafts.seqs[0][0]] += 1
    draft.clear()
    want = logits_to_probs(torch.from_numpy(draft.eval(ctx))[None], 0.7)[0].numpy()
    assert np.allclose(q, want, atol=1e-6)
    seen, want = want > 1e-4, want.astype(np.float64)
    assert chisquare(counts[seen], want[seen] / want[seen].sum() * counts[seen].sum()).pvalue > ALPHA


def test_drawn_sequences_draw_their_first_tokens_without_replacement(tiny_vocab):
    """Under sampling, where the theta rule drafts k sequences, their first tokens are distinct draws and each
    comes back with the row it was drawn from: the first's row with the earlier first tokens removed."""
    draft = Draft(str(tiny_vocab["draft"]) + ".gguf", n_ctx=256)
    drafter, ks = duodec.Drafter(draft), []
    for seed in range(40):
        ctx = [1] + [3 + (seed * 5 + j) % 12 for j in range(3)]
        d = drafter.run(duodec.DraftJob(context=ctx, depth=3, max_seqs=8, depths={1: 3, 2: 3, 4: 2, 8: 2},
                                        sample=(1.0, 0, 1.0, seed)))
        firsts = [seq[0] for seq in d.seqs]
        ks.append(d.k)
        assert d.k == len(d.seqs) == len(set(firsts)) and d.starts == [len(ctx)] * d.k
        for s in range(1, d.k):
            left = d.q[0][0].copy()
            left[firsts[:s]] = 0
            assert np.allclose(d.q[s][0], left / left.sum(), atol=1e-6)
        assert all(len(d.q[s]) == len(seq) == len(d.seqs[0]) for s, seq in enumerate(d.seqs))
        assert all(seq[0] == t for seq, t in zip(d.seqs, firsts))
    assert max(ks) > 1, ks


@pytest.mark.slow
@pytest.mark.parametrize("variant", [dict(force_seqs=3, gamma="4"),
                                     dict(gamma="4", catch_up=0, max_seqs=8, drafts="greedy"),
                                     dict(gamma="6", lookup_ngram=2, catch_up=4, drafts="greedy"),
                                     dict(gamma="4"),
                                     dict(gamma="4", max_seqs=8), dict(gamma="3", lookup_ngram=1)],
                         ids=["k=3 forced", "theta rule, top tokens", "catch-up and free candidates",
                              "drawn chain (default)", "theta rule, drawn sequences",
                              "drawn chain, looked-up tokens after it"])
def test_sampling_over_pipelined_rounds(tiny_vocab, variant):
    """Sampled outputs of 8 tokens, many rounds each (pre- and post-verify, catch-up, looked-up
    candidates), follow AR's distribution at every position."""
    target = Target(tiny_vocab["target"])
    fwd = duodec.make(args(**variant), target, Draft(str(tiny_vocab["draft"]) + ".gguf", n_ctx=512))
    try:
        prompt, gen, outs, ks, rounds, free = [1, 5, 6], torch.Generator().manual_seed(3), [], {}, 0, 0
        for _ in range(1500):
            g = fwd(prompt, 8, Sampling(1.0), gen)
            outs.append(g.token_ids)
            rounds += g.decoding_steps
            free += g.stats["free_rounds"]
            for k, v in g.stats["k_hist"].items():
                ks[k] = ks.get(k, 0) + v
        assert rounds > 2 * len(outs), rounds
        if variant.get("lookup_ngram") == 2:
            assert free > 30, free  # n-grams recur
        elif variant.get("lookup_ngram") == 1:
            assert free > 1000, free  # 1-grams recur at once: most drawn chains carry looked-up tokens
        elif variant.get("force_seqs") or variant.get("max_seqs"):
            assert any(int(k) > 1 for k in ks), ks
        pval, n = pit_pvalue(target, prompt, outs, 8)
        print(f"duodec {variant}: {n} tokens, k {ks}, free rounds {free}, PIT chi-square p = {pval:.3f}")
        assert n > 5000 and pval > ALPHA
    finally:
        fwd.close()


def test_default_mode_overlaps_on_split_cores_and_chooses_on_shared(tiny):
    """The dev split's choice: the pipeline always on split cores; on shared cores the measured choice, which can
    give each side every core in its turn."""
    target, draft = Target(tiny["target"]), Draft(str(tiny["draft"]) + ".gguf", n_ctx=512)
    for shared, want in ((False, "overlap"), (True, "auto")):
        fwd = duodec.make(args(shared=shared, mode=None), target, draft)
        try:
            assert fwd.settings["mode_effective"] == want
        finally:
            fwd.close()
