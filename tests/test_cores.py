"""Like for like: one cores regime per run (split or shared) that every method obeys, and truthful records."""
import os

import pytest

from src.eval import answers
from src.eval.compare import main as compare_main
from src.model.base import cut_accepts
from src.model.duodec import Modes, Tunables, effective_mode
from tests.test_duodec_policy import QUIET, hand_budget, run_rounds

CORES = len(os.sched_getaffinity(0))
METHODS = ["hf-ar", "hf-assisted", "hf-lookup", "sps", "sps-gguf", "pld", "lookahead", "pearl", "duodec",
           "duodec-paper"]


@pytest.fixture(scope="module")
def regime_runs(tiny, tmp_path_factory):
    """Each regime's run, made once for the module's tests."""
    made = {}

    def get(regime):
        if regime not in made:
            made[regime] = run_regime(tiny, tmp_path_factory.mktemp(regime), regime)
        return made[regime]
    return get


def run_regime(tiny, tmp_path, regime):
    from tests.conftest import write_jsonl
    questions = write_jsonl(tmp_path / "q.jsonl", [{"question_id": i, "category": "code", "turns": [t]} for i, t in
                                                   enumerate(["def add(a, b):\n", "for i in range(10):\n"])])
    out = tmp_path / regime
    compare_main(["--question-file", str(questions), "--bench", "demo", "--target", str(tiny["target"]),
                  "--hf-draft", str(tiny["draft"]), "--gguf-draft", str(tiny["draft"]) + ".gguf", "--device", "cpu",
                  "--cores", regime, "--max-new-tokens", "24", "--warmup", "0", "--methods", ",".join(METHODS),
                  "--out", str(out)])
    return {name: answers.load(out / f"{name}.jsonl") for name in ["ar", *METHODS]}


def turns(records):
    for r in records:
        c = r["choices"][0]
        yield r, c, c["stats"]


@pytest.mark.parametrize("regime", ["split", "shared"])
def test_every_method_keeps_to_the_regimes_cores(regime_runs, regime):
    """split: no answer records more threads on a side than that side owns (the draft owns one core, the target
    the rest; PEARL's draft shares the target's). shared: every method but DuoDecoding and PEARL records every
    core; PEARL's sides each half of them, as they compute at once; DuoDecoding chooses, with the -all modes open and each run on every core. Every answer's accept lengths sum
    to its new tokens."""
    runs = regime_runs(regime)
    own = {"target": max(1, CORES - 1), "draft": 1}
    for name, records in runs.items():
        assert len(records) == 2, name
        for r, c, stats in turns(records):
            assert c["settings"]["cores"]["regime"] == regime and r["config"]["cores"] == regime
            assert sum(c["accept_lengths"]) == sum(c["new_tokens"]), name
            for st in stats:
                used = st["threads"]
                if regime == "split":
                    assert used["target"] <= own["target"], (name, used)
                    assert used["draft"] is None or used["draft"] <= own["draft"], (name, used)
                    assert not any(m.endswith("-all") for m in st.get("mode_rounds", {})), name
                elif name.startswith("duodec"):
                    for mode, t in st["mode_threads"].items():
                        assert t["target"] == (CORES if mode.endswith("-all") else own["target"]), (name, mode, t)
                elif name == "pearl":  # its two sides compute at once, each on half of the cores
                    assert used["target"] == used["draft"] == max(1, CORES // 2), (name, used)
                else:
                    assert used["target"] == CORES, (name, used)
                    assert used["draft"] in (None, CORES), (name, used)
    assert all(runs[m][0]["choices"][0]["stats"][0]["threads"]["draft"] for m in ("sps", "sps-gguf", "pearl", "duodec"))
    if regime == "split":
        pearl = runs["pearl"][0]["choices"][0]
        assert pearl["settings"]["shared_cores"] == sorted(os.sched_getaffinity(0))[:own["target"]]
    duo = runs["duodec"][0]["choices"][0]["settings"]
    assert any(m.endswith("-all") for m in duo["modes_open"]) == (regime == "shared" and CORES > 1)


def test_paper_preset_runs_overlap_rounds_only(regime_runs):
    records = regime_runs("shared")["duodec-paper"]
    for _, c, stats in turns(records):
        s = c["settings"]
        assert s["preset"] == "paper" and s["mode_effective"] == "overlap" and s["max_seqs"] == 8
        assert s["gamma_rule"] == "time" and s["lookup_ngram"] == 0 and s["fit"] is False
        for st in stats:
            assert st["mode_rounds"]["overlap"] > 0, st["mode_rounds"]
            assert all(n == 0 for m, n in st["mode_rounds"].items() if m != "overlap"), st["mode_rounds"]
            assert set(st["mode_threads"]) == {"overlap"} and set(st["mode_costs_ms"]) <= {"overlap"}


def test_answer_records_the_costs_of_the_modes_that_ran():
    """Hand-made timings: forced sequential rounds at twice the probe's forward and 4 ms a draft step record those
    costs under sequential's name, and no other mode's."""
    b = hand_budget()
    modes = Modes(b, forced="sequential", tune=Tunables(every=1))
    run_rounds(modes, b, 20, dict(QUIET, sequential=(2.0, 0.004, 0.0)))
    costs = modes.as_dict()["mode_costs_ms"]
    assert set(costs) == {"sequential"}
    assert costs["sequential"]["forward_scale"] == pytest.approx(2.0)
    assert costs["sequential"]["draft_step"] == pytest.approx(4.0)


def test_a_mode_the_regime_does_not_open_runs_on_its_sides_own_cores(capsys):
    split = ["overlap", "sequential", "none"]
    assert effective_mode("auto", split) is None
    assert effective_mode("sequential", split) == "sequential"
    assert effective_mode("sequential-all", split) == "sequential"
    assert "running --mode sequential" in capsys.readouterr().err
    assert effective_mode("none-all", split + ["none-all"]) == "none-all"


@pytest.mark.parametrize("accepts, n, eos, want", [
    ([3, 2, 1], 6, False, [3, 2, 1]),      # nothing past the end
    ([3, 3], 5, False, [3, 2]),            # the last round drafted past max_new_tokens
    ([3, 2, 1], 4, True, [3, 1]),          # the stop token inside round 2: later tokens dropped
    ([3, 1], 3, True, [3, 0]),             # a round that gained only the stop token: a forward all the same
    ([1, 1, 1], 2, True, [1, 1, 0]),       # AR: the stop token's forward
])
def test_accept_lengths_sum_to_the_tokens_returned(accepts, n, eos, want):
    assert cut_accepts(accepts, n, eos) == want and sum(want) == n


def test_a_draft_beside_a_gpu_target_takes_the_fastest_thread_count_swept(tiny, monkeypatch):
    """Beside a GPU target the draft may own every core but two; a short sweep at start-up picks the fastest count
    (a small draft seldom scales that far), and the plan records what it measured."""
    import types

    import torch

    from src.model import plan_cores
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)))  # a 6-core host: the draft may own 4
    gpu_target = types.SimpleNamespace(device=torch.device("cuda"))
    cores = plan_cores("split", gpu_target, gguf_draft=str(tiny["draft"]) + ".gguf")
    assert set(cores.draft_sweep_ms) == {1, 2, 4}
    assert cores.draft_sweep_ms[cores.draft] == min(cores.draft_sweep_ms.values())
    assert cores.target == 6 - cores.draft and cores.as_dict()["draft_sweep_ms"] == cores.draft_sweep_ms
    assert plan_cores("split", gpu_target, draft_threads=3).draft_sweep_ms is None  # a count given is kept
