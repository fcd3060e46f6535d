"""The demo command measures afresh: a new run folder each call, resume only when asked, the reference beside."""
import json
import time

import pytest

from src.eval import answers
from src.eval.compare import main as compare_main
from src.utils import ROOT


def test_each_call_measures_into_a_new_folder(tmp_path, capsys):
    start = time.time()
    out = tmp_path / "run"
    common = ["--bench", "demo", "--device", "cpu", "--target-threads", "1", "--limit", "2", "--max-new-tokens",
              "16", "--methods", "ar,pld", "--warmup", "0", "--top-p", "0.9"]
    compare_main(common + ["--out", str(out), "--reference", str(ROOT / "results/demo-cpu")])
    printed = capsys.readouterr().out
    for name in ("ar", "pld"):
        recs = answers.load(out / f"{name}.jsonl")
        assert len(recs) == 2 and all(r["tstamp"] >= start for r in recs)
        assert recs[0]["choices"][0]["settings"]["top_p"] == 0.9
    machine = json.loads((out / "machine.json").read_text())
    assert {"cpu", "cores", "isa", "llama.cpp", "torch", "transformers", "llama-cpp-python"} <= set(machine)
    assert "This run beside the reference runs" in printed and "results/demo-cpu" in printed
    assert "This run beside" in (out / "report.md").read_text()
    with pytest.raises(SystemExit, match="--resume"):  # an earlier run's folder is never reused silently
        compare_main(common + ["--out", str(out)])
    compare_main(common + ["--resume", str(out)])  # everything answered: nothing decoded
    assert len((out / "ar.jsonl").read_text().splitlines()) == 2


def test_peer_variants_answer_as_ar_does(tiny, tmp_path):
    """transformers' generate (alone, assisted by the HF draft, prompt lookup): two questions each, written like
    every method, greedy output token-identical to AR's."""
    from tests.conftest import write_jsonl
    questions = write_jsonl(tmp_path / "q.jsonl", [{"question_id": i, "category": "code", "turns": [t]} for i, t in
                                                   enumerate(["def add(a, b):\n", "for i in range(10):\n"])])
    out = tmp_path / "run"
    peers = ["hf-ar", "hf-assisted", "hf-lookup"]
    compare_main(["--question-file", str(questions), "--bench", "demo", "--target", str(tiny["target"]),
                  "--hf-draft", str(tiny["draft"]), "--device", "cpu", "--target-threads", "1", "--max-new-tokens",
                  "24", "--warmup", "0", "--methods", ",".join(peers), "--out", str(out)])
    ar = {r["question_id"]: r["choices"][0] for r in answers.load(out / "ar.jsonl")}
    for name in peers:
        recs = answers.load(out / f"{name}.jsonl")
        assert len(recs) == 2
        for r in recs:
            c = r["choices"][0]
            assert c["token_ids"] == ar[r["question_id"]]["token_ids"], name
            assert c["ttft"][0] > 0 and c["stop"][0] in ("eos", "length")
            assert sum(c["accept_lengths"]) == c["new_tokens"][0]  # the streamer saw every step
    settings = answers.load(out / "hf-lookup.jsonl")[0]["choices"][0]["settings"]
    assert settings["mode"] == "lookup" and settings["lookup_tokens"] == 10


@pytest.mark.slow
def test_load_benchmark_runs_end_to_end(tmp_path):
    """`cmds/load_cpu.sh`'s script, small: the demo comparison quiet and beside a load that comes and goes; the
    load process is gone afterwards."""
    from src.tools.bench_load import main as bench_main
    bench_main(["--limit", "2", "--period", "0.3", "--conditions", "quiet,intermittent", "--out", str(tmp_path)])
    table = (tmp_path / "table.md").read_text()
    assert "| quiet |" in table and "| intermittent |" in table
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert sum(summary["intermittent"]["duodec_mode_rounds"].values()) > 0
