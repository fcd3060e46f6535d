"""PEARL: DuoDecoding's rounds with an HF draft on the target's device, its cores shared with the target."""
import argparse
import os

import pytest

from src.backends.target import Target
from src.model import pearl
from src.model.base import Cores, Sampling
from tests.lossless import ALPHA, PROMPTS, greedy_mismatches, sampling_pvalue

CORES = len(os.sched_getaffinity(0))


def make(target, draft, gamma=4, regime="split"):
    return pearl.make(argparse.Namespace(gamma=gamma, cores=Cores(regime, 1, 1, CORES)), target, draft)


def test_greedy_identical_to_ar_with_the_draft_on_the_targets_cores(tiny):
    target = Target(tiny["target"])
    for name, draft in (("other", Target(tiny["draft"])), ("same", Target(tiny["target"]))):
        fwd = make(target, draft)
        try:
            prompts = [target.tokenizer(p)["input_ids"] for p in PROMPTS[:8]]
            outs = [fwd(p, 32, Sampling(), None) for p in prompts]
            greedy_mismatches(target, prompts, [o.token_ids for o in outs], 32, f"pearl {name}")
            st = outs[0].stats
            assert set(st["mode_threads"]) == {"overlap"} and st["threads"] == {"target": 1, "draft": 1}
            assert all(sum(o.accept_lengths) == len(o.token_ids) for o in outs)
            if name == "same":  # the draft is the target: whole drafts hold, post-verify every round
                assert max(a for o in outs for a in o.accept_lengths) > 2
        finally:
            fwd.close()
    assert fwd.settings["shared_cores"] == [min(os.sched_getaffinity(0))]  # split: the target's one core


@pytest.mark.slow
def test_sampling_matches_ar_distribution(tiny_vocab):
    target = Target(tiny_vocab["target"])
    fwd = make(target, Target(tiny_vocab["draft"]), gamma=3)
    try:
        prompt = [1, 5, 6]
        pval = sampling_pvalue(fwd, target, prompt, 4000, n=2)  # a pipe round trip per round: fewer, shorter
        print(f"pearl chi-square p = {pval:.3f}")
        assert pval > ALPHA
    finally:
        fwd.close()


def test_worker_loads_the_twin_the_parent_measured():
    """PEARL's worker process loads the draft as the parent holds it: a twin at its shape, not its small source."""
    from src.backends.hf_draft import HFDraft
    from src.model.duodec.worker import WorkerSpec
    from tests.test_twins import DEMO
    draft = HFDraft(Target(DEMO / "demo-draft", twin="512x6x1024"))
    loaded = WorkerSpec.of(draft, None).load()
    assert loaded.model.config.hidden_size == 512 and loaded.model.config.num_hidden_layers == 6
