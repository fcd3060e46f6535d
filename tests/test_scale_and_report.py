"""Shards and merge, device maps, Spec-Bench compatibility, the report, and adding a method."""
import json

import pytest

from src.backends.target import Target
from src.eval import answers
from src.eval.inference import Run, main as inference_main, run_eval
from src.eval.merge import merge
from src.eval.report import load_run, lookahead_costs, overlap_ceiling, pipeline, plot_title, write_report
from src.eval.speed import main as speed_main
from src.model import METHODS
from src.model.autoregressive import generate
from src.model.base import Sampling
from tests.conftest import write_jsonl

QS = [{"question_id": i, "category": "code" if i % 2 else "text", "turns": [f"def f{i}(x):\n"]} for i in range(1, 8)]


def test_shards_and_merge_lose_and_duplicate_nothing(tiny, tmp_path):
    q = write_jsonl(tmp_path / "q.jsonl", QS)
    out = tmp_path / "a.jsonl"
    for i in range(3):
        inference_main(["--target", str(tiny["target"]), "--question-file", str(q), "--answer-file", str(out),
                        "--max-new-tokens", "4", "--num-shards", "3", "--shard-index", str(i), "--warmup", "0"])
    files = sorted(tmp_path.glob("a.shard*of3.jsonl"))
    assert len(files) == 3
    merged = merge(files, [x["question_id"] for x in QS])
    assert [r["question_id"] for r in merged] == list(range(1, 8))
    with pytest.raises(ValueError, match="answered twice"):
        merge(files + files[:1])
    with pytest.raises(ValueError, match="missing"):
        merge(files[:2], [x["question_id"] for x in QS])


def test_device_map_path(tiny):
    """--device-map goes through accelerate; on CPU a map given explicitly exercises the same path."""
    dmap = {"model.embed_tokens": "cpu", "model.layers": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu",
            "lm_head": "cpu"}
    mapped, plain = Target(tiny["target"], device_map=dmap), Target(tiny["target"])
    ids = plain.tokenizer("class Point:\n")["input_ids"]
    assert generate(mapped, ids, 24, Sampling()).token_ids == generate(plain, ids, 24, Sampling()).token_ids


def test_spec_bench_style_file_gives_the_published_formula(tmp_path, capsys):
    """A hand-written file in Spec-Bench's format (no project-specific fields): speedup is the ratio of the
    mean per-question speeds, each Σ new_tokens / Σ wall_time (Spec-Bench's speed.py)."""
    def line(qid, toks, times, acc):
        return {"question_id": qid, "answer_id": "x", "model_id": "m", "tstamp": 0.0, "category": "qa",
                "choices": [{"index": 0, "turns": ["a"] * len(toks), "decoding_steps": [len(acc)],
                             "new_tokens": toks, "wall_time": times, "accept_lengths": acc}]}
    base = write_jsonl(tmp_path / "b.jsonl", [line(2, [30], [3.0], [1] * 30), line(1, [20, 20], [1.0, 3.0], [1] * 40)])
    meth = write_jsonl(tmp_path / "m.jsonl", [line(1, [20, 20], [0.5, 1.5], [2] * 20),
                                              line(2, [30], [1.0], [3] * 10), line(2, [30], [1.0], [3] * 10)])
    speed_main(["--file-path", str(meth), "--base-path", str(base), "--json"])
    res = json.loads(capsys.readouterr().out)["overall"]
    # base speeds: 40/4 = 10, 30/3 = 10 -> 10; method: 40/2 = 20, 30/1 = 30 -> 25 (duplicate line dropped)
    assert res["speedup"] == pytest.approx(2.5)
    assert res["mean_accepted"] == pytest.approx((2 * 20 + 3 * 10) / 30)
    assert [r["question_id"] for r in answers.load(meth)] == [1, 2]


def test_toy_method_through_the_harness(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, "repeat", "tests.toy_method")
    q = write_jsonl(tmp_path / "q.jsonl", QS[:3])
    out, ref = tmp_path / "toy.jsonl", tmp_path / "ar.jsonl"
    common = ["--target", str(tiny["target"]), "--question-file", str(q), "--max-new-tokens", "24", "--warmup", "0"]
    inference_main(["--method", "repeat", "--answer-file", str(out)] + common)
    inference_main(["--method", "ar", "--answer-file", str(ref)] + common)
    toy, ar = answers.load(out), answers.load(ref)
    assert [r["choices"][0]["token_ids"] for r in toy] == [r["choices"][0]["token_ids"] for r in ar]
    assert toy[0]["choices"][0]["settings"]["toy"] == "repeat-last"


def test_report_writes_markdown_and_plots(tiny, tmp_path):
    t = Target(tiny["target"])
    for name in ("ar", "sps", "duodec"):
        def fwd(ids, n, s, g, name=name):
            out = generate(t, ids, n, s, g)
            out.stats = {"k_hist": {"1": 3, "2": 1}, "gamma": 7, "target_idle_share": 0.1,
                         "draft_idle_share": 0.3} if name == "duodec" else {}
            return out
        run_eval([Run(name, fwd, tmp_path / f"{name}.jsonl")], QS, t.tokenizer, max_new_tokens=6, warmup=0)
    (tmp_path / "machine.json").write_text(json.dumps({"cpu": "AMD EPYC", "cores": 2, "gpu": "none"}))
    (tmp_path / "summary.json").write_text(json.dumps({"split": "test"}))
    md = write_report(tmp_path).read_text()
    assert "## code" in md and "## overall" in md and "| duodec | 7 |" in md
    for png in ("speedup.png", "acceptance.png"):
        assert (tmp_path / png).stat().st_size > 5000
    # the plots say where and how they were measured (answers made before regimes record none: '-')
    assert plot_title(tmp_path, load_run(tmp_path)) == "AMD EPYC, 2 cores; cores -; test split"


def test_pipeline_bound_and_efficiency_by_hand():
    def rec(qid, tokens, wall, steps, verify_ms=None):
        stats = [{"verify_ms": verify_ms}] if verify_ms else [{}]
        return {"question_id": qid, "choices": [{"new_tokens": [tokens], "wall_time": [wall],
                                                 "decoding_steps": [steps], "stats": stats}]}
    ar = [rec(1, 10, 0.040, 10), rec(2, 10, 0.050, 10)]
    # question 1: 5 tokens per forward, AR 4 ms/token, 8 ms per verify round: bound 2.5; speedup 2.0
    # question 2: 2 tokens per forward, AR 5 ms/token, 5 ms per round: bound 2.0; speedup 1.0
    duo = [rec(1, 10, 0.020, 2, 8.0), rec(2, 10, 0.050, 5, 5.0)]
    v_ms, bound, eff = pipeline(duo, ar)
    assert v_ms == pytest.approx(6.5) and bound == pytest.approx(2.25) and eff == pytest.approx(0.65)


def test_lookahead_costs_by_hand():
    def rec(qid, cat, tokens, wall, steps, stats):
        return {"question_id": qid, "category": cat, "choices": [{"new_tokens": [tokens], "wall_time": [wall],
                                                                   "decoding_steps": [steps], "stats": [stats]}]}
    ar = [rec(1, "a", 10, 0.040, 10, {}), rec(2, "b", 10, 0.050, 10, {})]
    # question 1: 5 forwards of 12 tokens (4 guessed), 2 tokens each, 10 ms a step: AR's 4 ms/token, bound 0.8
    la = [rec(1, "a", 10, 0.060, 5, {"forwards": 5, "fed_tokens": 60, "guess_tokens": 20, "step_s": 0.050}),
          rec(2, "b", 10, 0.050, 10, {"forwards": 10, "fed_tokens": 80, "guess_tokens": 0, "step_s": 0.060})]
    rows = {r[0]: r for r in lookahead_costs(la, ar)}
    assert rows["a"][1:] == pytest.approx((1, 2.0, 12.0, 4.0, 10.0, 4.0, 0.8))
    assert rows["b"][1:] == pytest.approx((1, 1.0, 8.0, 0.0, 6.0, 5.0, 5.0 / 6.0))
    assert rows["overall"][1:5] == pytest.approx((2, 20 / 15, 140 / 15, 20 / 15))


def test_overlap_ceiling_by_hand():
    sps = [{"choices": [{"settings": {"gamma": 5, "draft_backend": "llama.cpp"}}]}]
    duo = [{"choices": [{"settings": {"draft_step_ms": {"1": 0.2}, "target_forward_ms": {"1": 3.0, "8": 5.0}}}]}]
    ceiling, gamma, t_draft, t_fwd = overlap_ceiling(sps, duo)
    assert t_fwd == pytest.approx(3.0 + 2.0 * 5 / 7)  # interpolated at gamma + 1 = 6 tokens
    assert ceiling == pytest.approx(1 + 5 * 0.2 / t_fwd)
    hf = [{"choices": [{"settings": {"gamma": 5, "draft_backend": "hf"}}]}]
    assert overlap_ceiling(hf, duo) is None and overlap_ceiling(None, duo) is None


def test_ab_medians_by_hand(tmp_path):
    """Two commits' runs: each run's speedup over its own AR, and each commit's median."""
    from src.eval.ab import table

    def run(name, ar_s, duo_s):
        folder = tmp_path / name
        folder.mkdir()
        for method, wall in (("ar", ar_s), ("duodec", duo_s)):
            write_jsonl(folder / f"{method}.jsonl", [
                {"question_id": 1, "category": "code", "choices": [{"new_tokens": [10], "wall_time": [wall],
                                                                    "decoding_steps": [5], "accept_lengths": [2] * 5}]}])
        return folder
    old = [run("o1", 1.0, 0.5), run("o2", 2.0, 0.5), run("o3", 1.0, 1.0)]  # 2, 4, 1: median 2
    new = [run("n1", 3.0, 1.0)]
    lines = table((old, new), ("old", "new")).splitlines()
    assert lines[2] == "| duodec | 2.00, 4.00, 1.00 | 2.00 | 3.00 | 3.00 |"


def test_duodec_costs_by_hand():
    from src.eval.report import duodec_costs

    def rec(qid, cat, tokens, wall, steps, stats=None):
        return {"question_id": qid, "category": cat, "choices": [{"new_tokens": [tokens], "wall_time": [wall],
                                                                   "decoding_steps": [steps], "stats": [stats or {}]}]}
    ar = [rec(1, "a", 10, 0.040, 10), rec(2, "b", 10, 0.050, 10)]
    # a: 5 tokens per forward of 6 fed, AR 4 ms/token, 8 ms a round: bound 2.5, speedup 2.0, efficiency 0.8
    # b: 2 tokens per forward of 3 fed, AR 5 ms/token, 5 ms a round: bound 2.0, speedup 1.0, efficiency 0.5
    duo = [rec(1, "a", 10, 0.020, 2, {"verify_ms": 8.0, "verify_tokens": 6.0, "target_idle_share": 0.1,
                                      "draft_idle_share": 0.4}),
           rec(2, "b", 10, 0.050, 5, {"verify_ms": 5.0, "verify_tokens": 3.0, "target_idle_share": 0.3,
                                      "draft_idle_share": 0.2})]
    rows = {r[0]: r[1:] for r in duodec_costs(duo, ar)}
    assert rows["a"] == pytest.approx((1, 5.0, 6.0, 8.0, 0.1, 0.4, 2.5, 0.8))
    assert rows["b"] == pytest.approx((1, 2.0, 3.0, 5.0, 0.3, 0.2, 2.0, 0.5))
    assert rows["overall"] == pytest.approx((2, 20 / 7, 4.5, 6.5, 0.2, 0.3, 2.25, 0.65))
