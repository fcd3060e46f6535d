import json
import subprocess
import sys

import pytest

from src.backends.target import Target
from src.eval import answers
from src.eval.inference import Run, answer_record, main as inference_main, run_eval, turn_order
from src.eval.prompts import PromptError, build_prompt
from src.eval.questions import SPLITS, QuestionFileError, load_questions, per_category, questions_for
from src.eval.speed import compare, main as speed_main
from src.model.autoregressive import generate
from tests.conftest import ROOT, specbench, write_jsonl

QS = [{"question_id": i, "category": "code", "turns": [f"def f{i}(x):\n"]} for i in range(1, 6)]


def ar_forward(target):
    return lambda ids, n, s, g: generate(target, ids, n, s, g)


def test_writes_lines_and_resumes_after_crash(tiny, tmp_path):
    t = Target(tiny["target"])
    out = tmp_path / "a.jsonl"
    calls = []

    def crashing(ids, n, s, g):
        calls.append(1)
        if len(calls) == 4:  # warm-up + 2 answers, then the "crash"
            raise KeyboardInterrupt
        return generate(t, ids, n, s, g)

    with pytest.raises(KeyboardInterrupt):
        run_eval([Run("m", crashing, out)], QS, t.tokenizer, max_new_tokens=8)
    with open(out, "a") as f:
        f.write('{"question_id": 3, "categ')  # a torn line, as a kill mid-write leaves
    assert len(answers.repair(out)) == 2
    n = run_eval([Run("m", ar_forward(t), out)], QS, t.tokenizer, max_new_tokens=8)
    assert n == 3
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    assert sorted(r["question_id"] for r in lines) == [1, 2, 3, 4, 5]
    for r in lines:
        c = r["choices"][0]
        assert set(c) >= {"index", "turns", "new_tokens", "wall_time", "accept_lengths", "decoding_steps",
                          "token_ids", "ttft", "settings"}
        assert c["new_tokens"][0] == len(c["token_ids"][0]) <= 8
        assert {"question_id", "category", "answer_id", "model_id", "tstamp"} <= set(r)
    assert run_eval([Run("m", ar_forward(t), out)], QS, t.tokenizer, max_new_tokens=8) == 0


def test_malformed_middle_line_is_an_error(tmp_path):
    out = tmp_path / "a.jsonl"
    out.write_text('{"question_id": 1}\nnot json\n{"question_id": 2}\n')
    with pytest.raises(answers.AnswerFileError, match=":2:"):
        answers.repair(out)


def test_malformed_question_file_names_the_line(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text('{"question_id": 1, "turns": ["a"]}\n{"question_id": 2, "turns": [\n')
    with pytest.raises(QuestionFileError, match=r"q.jsonl:2: malformed JSON"):
        load_questions(f)
    f.write_text('{"question_id": 1, "turns": []}\n')
    with pytest.raises(QuestionFileError, match=":1:"):
        load_questions(f)


def test_empty_and_overlong_prompts(tiny, tmp_path):
    t = Target(tiny["target"])
    bad = [{"question_id": 1, "category": "x", "turns": ["   "]}]
    with pytest.raises(PromptError, match="empty prompt"):
        run_eval([Run("m", ar_forward(t), tmp_path / "a.jsonl")], bad, t.tokenizer, max_new_tokens=4, warmup=0)
    long = [{"question_id": 1, "category": "x", "turns": ["x = 1\n" * 400]}]
    with pytest.raises(PromptError, match="exceeds the target's context of 512"):
        run_eval([Run("m", ar_forward(t), tmp_path / "b.jsonl")], long, t.tokenizer, max_new_tokens=4,
                 max_length=t.max_length, warmup=0)


def test_spec_bench_files_and_templates():
    specbench()
    qs = questions_for("spec_bench")
    assert len(qs) == 480 and {q["category"] for q in qs} == {
        "mt_bench", "translation", "summarization", "qa", "math_reasoning", "rag"}
    assert all(len(q["turns"]) == 2 for q in qs if q["category"] == "mt_bench")
    he = questions_for("humaneval")
    assert len(he) == 164 and he[0]["question_id"] == 1000
    both = questions_for("spec_bench_humaneval")
    assert len({q["question_id"] for q in both}) == len(both) == 644  # one id per question, whatever the split
    p2 = build_prompt("vicuna_v1.1", ["Hi?", "More?"], ["Hello."])
    assert p2.index("Hi?") < p2.index("Hello.") < p2.index("More?") and p2.rstrip().endswith("ASSISTANT:")
    assert "[INST]" in build_prompt("llama-2", ["Hi?"], [])


def test_cli_humaneval_three_lines_and_speed_one(tiny, tmp_path, capsys):
    out = tmp_path / "a.jsonl"
    inference_main(["--method", "ar", "--bench", "humaneval", "--question-file", str(specbench() / "humaneval.jsonl"),
                    "--target", str(tiny["target"]), "--limit", "3", "--answer-file", str(out),
                    "--max-new-tokens", "16"])
    assert len(out.read_text().splitlines()) == 3
    capsys.readouterr()
    speed_main(["--file-path", str(out), "--base-path", str(out), "--json"])
    res = json.loads(capsys.readouterr().out)
    assert res["overall"]["speedup"] == pytest.approx(1.0)


def test_cli_clear_errors(tmp_path):
    def run(*args):
        p = subprocess.run([sys.executable, "-m", "src.eval.inference", *args], cwd=ROOT, capture_output=True,
                           text=True)
        assert p.returncode != 0
        return p.stderr.strip().splitlines()[-1]
    q = write_jsonl(tmp_path / "q.jsonl", QS)
    out = str(tmp_path / "x")
    assert "src/utils.py" in run("--target", "llama-2-7b", "--question-file", str(q), "--answer-file", out)
    assert "--method must be one of" in run("--method", "nosuch", "--question-file", str(q), "--answer-file", out)


def test_speed_formula_on_hand_made_files(tmp_path):
    def rec(qid, cat, toks, times, acc=(1,)):
        return {"question_id": qid, "category": cat, "choices": [
            {"index": 0, "turns": ["x"] * len(toks), "new_tokens": toks, "wall_time": times,
             "accept_lengths": list(acc), "decoding_steps": [1], "ttft": [0.1]}]}
    base = [rec(1, "a", [10], [1.0]), rec(2, "b", [20, 20], [1.0, 1.0])]      # speeds 10, 20 -> mean 15
    meth = [rec(1, "a", [10], [0.5], (2, 3)), rec(2, "b", [40], [1.0], (4,))]  # speeds 20, 40 -> mean 30
    res = compare(meth, base)
    assert res["overall"]["speedup"] == pytest.approx(2.0)
    assert res["a"]["speedup"] == pytest.approx(2.0)
    assert res["overall"]["mean_accepted"] == pytest.approx(3.0)


def sampled_ids(tiny, q, out, seed):
    subprocess.run([sys.executable, "-m", "src.eval.inference", "--target", str(tiny["target"]), "--question-file",
                    str(q), "--answer-file", str(out), "--temperature", "1", "--max-new-tokens", "12",
                    "--warmup", "0", "--seed", str(seed)], cwd=ROOT, check=True, capture_output=True)
    return [r["choices"][0]["token_ids"] for r in answers.load(out)]


@pytest.mark.slow
def test_seed_reproduces_sampling_across_processes(tiny, tmp_path):
    q = write_jsonl(tmp_path / "q.jsonl", QS[:3])
    a, b = sampled_ids(tiny, q, tmp_path / "a.jsonl", 0), sampled_ids(tiny, q, tmp_path / "b.jsonl", 0)
    assert a == b
    assert sampled_ids(tiny, q, tmp_path / "c.jsonl", 1) != a


def test_ar_runs_without_other_methods_dependencies(tiny, tmp_path, monkeypatch):
    from src.model import NotImplementedMethod, load_method
    monkeypatch.setitem(sys.modules, "draftretriever", None)  # `import draftretriever` now fails
    monkeypatch.delitem(sys.modules, "src.model.rest", raising=False)
    with pytest.raises(NotImplementedMethod, match="needs the package 'draftretriever'"):
        load_method("rest")
    q = write_jsonl(tmp_path / "q.jsonl", QS[:2])
    inference_main(["--method", "ar", "--target", str(tiny["target"]), "--question-file", str(q),
                    "--answer-file", str(tmp_path / "a.jsonl"), "--max-new-tokens", "4", "--warmup", "0"])
    assert len(answers.load(tmp_path / "a.jsonl")) == 2


def test_each_method_owns_its_flags():
    from src.model import method_args
    assert method_args("sps", ["--gamma", "7"])[1].gamma == 7
    assert method_args("duodec")[1].gamma == "auto"
    with pytest.raises(SystemExit):
        method_args("ar", ["--gamma", "7"])  # AR has no --gamma


def test_turn_order_is_reproducible_and_changes_neighbours():
    runs = ["ar", "sps", "pld", "duodec", "duodec-b"]
    orders = [turn_order(runs, 0, q) for q in range(200)]
    assert all(sorted(o) == sorted(runs) for o in orders)
    assert orders == [turn_order(runs, 0, q) for q in range(200)]  # same seed, same order: resumable
    assert orders != [turn_order(runs, 1, q) for q in range(200)]
    # no run always follows the same one (a rotation would), and each run goes first about equally often
    behind = {r: {o[o.index(r) - 1] for o in orders if o.index(r) > 0} for r in runs}
    assert all(len(b) == len(runs) - 1 for b in behind.values()), behind
    firsts = [o[0] for o in orders]
    assert min(firsts.count(r) for r in runs) > 200 / len(runs) / 2


def test_splits_take_their_questions_of_each_category():
    qs = [{"question_id": c * 100 + i, "category": cat} for c, cat in enumerate("ab") for i in range(16)]
    dev, test = per_category(qs, 4, SPLITS["dev"]), per_category(qs, 4, SPLITS["test"])
    assert [q["question_id"] for q in dev[:4]] == [0, 100, 1, 101]
    assert sorted(q["question_id"] % 100 for q in test) == sorted([10, 11, 12, 13] * 2)
    assert not {q["question_id"] for q in dev} & {q["question_id"] for q in test}


def test_mt_bench_answers_carry_spec_bench_categories(tmp_path):
    """Spec-Bench's speed.py selects MT-bench by its own categories (writing, ...): the answer line keeps one, and
    this harness reads it back as mt_bench."""
    q = {"question_id": 81, "category": "mt_bench", "subcategory": "writing", "turns": ["Hi?"]}
    line = answer_record(q, {"turns": ["Hello."]}, "ar")
    assert line["category"] == "writing"
    qa = {"question_id": 200, "category": "qa", "turns": ["Who?"]}
    write_jsonl(tmp_path / "a.jsonl", [line, answer_record(qa, {"turns": ["Me."]}, "ar")])
    got = answers.load(tmp_path / "a.jsonl")
    assert [(a["category"], a.get("subcategory")) for a in got] == [("mt_bench", "writing"), ("qa", None)]


def test_specbench_found_where_the_harness_reads_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECBENCH_DIR", str(tmp_path))
    assert specbench() == tmp_path


def test_recorded_paths_name_no_machine(monkeypatch):
    from src.utils import CACHE, portable
    assert portable(ROOT / "data/rest/demo.idx") == "data/rest/demo.idx"
    assert portable(CACHE / "rest/qwen-coder.idx") == "$DUODEC_CACHE/rest/qwen-coder.idx"
