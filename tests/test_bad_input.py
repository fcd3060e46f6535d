"""Bad input and faults, through the entry points' own run_cli: one clear line, the right exit code, no traceback,
and nothing lost or doubled. One test (or a parametrised set) per class. Inference runs in this process
(`here`) unless the test is about processes: Ctrl-C, a killed worker, two writers."""
import contextlib
import importlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from src.argtypes import threads
from src.eval import answers
from tests.conftest import ROOT, write_jsonl

QS = [{"question_id": i, "category": "code", "turns": [f"def f{i}(x):\n"]} for i in range(1, 7)]


def cli(module, *args, timeout=300, **kw):
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, **kw)


def here(module, *args):
    """The module's entry point in this process, as `python -m module` runs it; its exit code and stderr."""
    from src.eval.cli import run_cli
    main, err, threads = importlib.import_module(module).main, io.StringIO(), torch.get_num_threads()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            run_cli(main, [str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
        if isinstance(e.code, str):  # the interpreter prints sys.exit's message
            err.write(e.code + "\n")
    finally:
        torch.set_num_threads(threads)
    return subprocess.CompletedProcess([module, *args], code, "", err.getvalue())


def one_error(p, code, *words):
    """The process failed with `code` and said so in one `error:` line holding every word; no traceback."""
    assert p.returncode == code, (p.returncode, p.stderr[-2000:])
    assert "Traceback" not in p.stderr, p.stderr[-2000:]
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, p.stderr[-2000:]
    for w in words:
        assert w in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def qfile(tmp_path):
    return write_jsonl(tmp_path / "q.jsonl", QS)


def infer(tiny, qfile, out, *extra):
    return here("src.eval.inference", "--target", tiny["target"], "--question-file", qfile, "--answer-file", out,
               "--max-new-tokens", 8, "--warmup", 0, *extra)


def long_run(tiny, tmp_path, n, tokens, *extra, **popen):
    """An inference run in the background over n questions (stderr piped): (process, answer file)."""
    many = write_jsonl(tmp_path / "many.jsonl", [{"question_id": i, "category": "code", "turns": [f"def g{i}(y):\n"]}
                                                 for i in range(n)])
    out = tmp_path / "a.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "src.eval.inference", "--target", str(tiny["target"]),
                             "--question-file", str(many), "--answer-file", str(out), "--max-new-tokens", str(tokens),
                             "--warmup", "0", *extra], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, **popen)
    return proc, out, many


# -- 1. every flag is checked before any model loads -------------------------------------------------

BAD_FLAGS = [
    (["--top-p", "0", "--temperature", "1"], "--top-p must be in (0, 1]"),
    (["--top-p", "1.5"], "--top-p"),
    (["--temperature", "-1"], "--temperature"),
    (["--max-new-tokens", "-5"], "--max-new-tokens"),
    (["--limit", "-1"], "--limit"),
    (["--top-k", "-3"], "--top-k"),
    (["--method", "sps", "--draft", "demo-draft", "--gamma", "0"], "--gamma"),
    (["--method", "duodec", "--gamma", "0"], "--gamma"),
    (["--method", "duodec", "--max-seqs", "0"], "--max-seqs"),
    (["--method", "pld", "--min-ngram", "4"], "--min-ngram"),
    (["--method", "duodec", "--mode", "sometimes"], "--mode"),
    (["--dtype", "int4"], "--dtype"),
    (["--draft-threads", "0"], "--draft-threads"),
    (["--shard-index", "3", "--num-shards", "2"], "--shard-index"),
    (["--device", "gpu"], "--device"),
    (["--method", "lookahead", "--level", "1"], "--level"),
    (["--method", "lookahead", "--window", "0"], "--window"),
    (["--method", "lookahead", "--guess", "-1"], "--guess"),
    (["--method", "nosuch"], "--method"),
    (["--method", "pearl"], "needs --draft"),
    (["--method", "pearl", "--draft", "demo-draft-gguf"], "HF directory"),
    (["--method", "pearl", "--draft", "demo-draft", "--gamma", "0"], "--gamma"),
    (["--method", "duodec", "--draft", "demo-draft"], "GGUF file"),
]


@pytest.mark.parametrize("flags,words", BAD_FLAGS, ids=[" ".join(f) for f, _ in BAD_FLAGS])
def test_bad_flag_is_one_line_before_loading(qfile, tmp_path, flags, words, monkeypatch):
    """In-process (`here`), so that no interpreter starts per flag."""
    monkeypatch.setattr("src.eval.inference.load_target", lambda *a, **k: pytest.fail("a model loaded"))
    out = tmp_path / "a.jsonl"
    one_error(here("src.eval.inference", "--question-file", qfile, "--answer-file", out, *flags), 2, words)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_on_a_machine_without_one(qfile, tmp_path):
    one_error(here("src.eval.inference", "--question-file", qfile, "--answer-file", tmp_path / "a", "--device",
                  "cuda"), 2, "--device cuda", "no CUDA device")


def test_answer_file_that_cannot_be_written(qfile, tmp_path):
    (tmp_path / "plain").write_text("")
    one_error(here("src.eval.inference", "--question-file", qfile, "--answer-file", tmp_path / "plain/sub/a.jsonl"),
              2, "--answer-file", "is a file")
    one_error(here("src.eval.inference", "--question-file", qfile, "--answer-file", tmp_path), 2, "is a folder")
    from src.eval.inference import check_answer_path
    made = tmp_path / "new/deeper/a.jsonl"  # a missing folder is made
    assert check_answer_path(made) is None and made.parent.is_dir()


def test_thread_counts_are_capped_at_the_cores(capsys):
    cores = len(os.sched_getaffinity(0))
    assert threads("--target-threads")(str(cores + 62)) == cores
    assert "capped" in capsys.readouterr().err


def test_bad_questions_are_refused_with_file_and_line(tiny, tmp_path):
    out = tmp_path / "a.jsonl"
    empty = write_jsonl(tmp_path / "empty.jsonl", QS[:2] + [{"question_id": 9, "turns": ["  "]}])
    one_error(infer(tiny, empty, out), 1, "empty.jsonl:3", "empty turn")
    no_turns = write_jsonl(tmp_path / "noturns.jsonl", [{"question_id": 1}])
    one_error(infer(tiny, no_turns, out), 1, "noturns.jsonl:1", "'turns'")
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"question_id": 1, "turns": ["a"]}\n{"question_id": 2, "turns": ["caf\xe9"]}\n')
    one_error(infer(tiny, latin, out), 1, "latin.jsonl:2", "not UTF-8", "0xe9")
    long = write_jsonl(tmp_path / "long.jsonl", QS[:3] + [{"question_id": 77, "turns": ["x = 1\n" * 400]}])
    one_error(infer(tiny, long, out), 1, "question 77 turn 1", "context of 512")
    assert not out.exists()  # refused before the first answer, so a fixed file starts clean


def test_truncated_model_is_one_line(tiny, qfile, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny["target"], broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 2])
    one_error(here("src.eval.inference", "--target", broken, "--question-file", qfile, "--answer-file",
                  tmp_path / "a.jsonl"), 1, "cannot load model", str(broken))


# -- 2. an answer file belongs to one configuration and one writer ------------------------------------

def test_resume_with_another_configuration_is_refused(tiny, qfile, tmp_path):
    out = tmp_path / "a.jsonl"
    assert infer(tiny, qfile, out, "--limit", 3).returncode == 0
    one_error(infer(tiny, qfile, out, "--max-new-tokens", 16), 1, "max_new_tokens", "--force-resume")
    one_error(infer(tiny, qfile, out, "--method", "pld"), 1, "method")
    assert infer(tiny, qfile, out).returncode == 0  # the same configuration resumes
    assert len(answers.repair(out)) == len(QS)
    assert infer(tiny, qfile, out, "--max-new-tokens", 16, "--force-resume").returncode == 0


def test_two_writers_on_one_answer_file(tiny, tmp_path):
    first, out, many = long_run(tiny, tmp_path, 60, 96)
    lock = out.with_name(f".{out.name}.lock")
    deadline = time.time() + 60
    while not (lock.exists() and lock.read_text().strip() == str(first.pid)) and time.time() < deadline:
        time.sleep(0.05)
    second = infer(tiny, many, out, "--max-new-tokens", 96)
    still_running = first.poll() is None
    first.wait(timeout=300)
    assert first.returncode == 0, first.stderr.read()[-2000:]
    assert still_running, "the first writer ended before the second started: enlarge its work"
    one_error(second, 1, str(out), f"PID {first.pid}")
    ids = [json.loads(line)["question_id"] for line in out.read_text().splitlines()]
    assert sorted(ids) == list(range(60))  # each answer once


def test_merge_does_not_overwrite(tmp_path):
    shard = write_jsonl(tmp_path / "s.jsonl", [{"question_id": 1, "choices": []}])
    out = write_jsonl(tmp_path / "out.jsonl", [{"question_id": i, "choices": []} for i in range(10)])
    one_error(cli("src.eval.merge", "--out", out, shard), 1, str(out), "--overwrite")
    assert len(out.read_text().splitlines()) == 10
    assert cli("src.eval.merge", "--out", out, shard, "--overwrite").returncode == 0


# -- 3. figures that cannot lie ------------------------------------------------------------------------

def record(qid, cat="code", wall=1.0, tokens=10, config=None):
    r = {"question_id": qid, "category": cat, "choices": [{"turns": ["x"], "new_tokens": [tokens],
                                                           "wall_time": [wall], "accept_lengths": [1] * tokens,
                                                           "decoding_steps": [tokens], "ttft": [0.01]}]}
    return {**r, "config": config} if config else r


def test_speed_refuses_wrong_figures(tmp_path):
    base = write_jsonl(tmp_path / "ar.jsonl", [record(i) for i in range(10)])
    zero = write_jsonl(tmp_path / "zero.jsonl", [record(i) for i in range(9)] + [record(9, wall=0.0)])
    one_error(cli("src.eval.speed", "--file-path", zero, "--base-path", base), 1, "question 9", "wall time")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    one_error(cli("src.eval.speed", "--file-path", empty, "--base-path", base), 1, "no answers")
    other = write_jsonl(tmp_path / "qa.jsonl", [record(i, cat="qa") for i in range(10)])
    one_error(cli("src.eval.speed", "--file-path", other, "--base-path", base), 1, "different benches")
    cfg = lambda b: {"bench": b, "question_file": None}
    b1 = write_jsonl(tmp_path / "b1.jsonl", [record(i, config=cfg("demo")) for i in range(10)])
    b2 = write_jsonl(tmp_path / "b2.jsonl", [record(i, config=cfg("humaneval")) for i in range(10)])
    one_error(cli("src.eval.speed", "--file-path", b2, "--base-path", b1), 1, "different question sets")
    half = write_jsonl(tmp_path / "half.jsonl", [record(i) for i in range(5)])
    one_error(cli("src.eval.speed", "--file-path", half, "--base-path", base), 1, "only 5 questions", "--allow-partial")
    p = cli("src.eval.speed", "--file-path", half, "--base-path", base, "--allow-partial")
    assert p.returncode == 0 and "5 answered, 10 in the baseline, 5 paired" in p.stdout


def test_report_refuses_wrong_figures(tmp_path):
    write_jsonl(tmp_path / "ar.jsonl", [record(i) for i in range(10)])
    write_jsonl(tmp_path / "pld.jsonl", [record(i, wall=-1.0 if i == 4 else 0.5) for i in range(10)])
    one_error(cli("src.eval.report", tmp_path), 1, "question 4")


# -- 4. interruption and worker death end with a message ----------------------------------------------

def children(pid):
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def wait_for_lines(path, n, proc, limit=120):
    deadline = time.time() + limit
    while time.time() < deadline and proc.poll() is None:
        # bytes: a line being written may end mid-character
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {n} lines")


@pytest.mark.parametrize("worker", ["thread", "process"])
def test_ctrl_c_is_one_line_and_resumes(tiny, tmp_path, worker):
    # a person's terminal delivers Ctrl-C to a process that handles it; a suite run as a background job
    # (nohup ... &, a CI runner without a terminal) hands its children SIGINT ignored, so restore the default
    proc, out, _ = long_run(tiny, tmp_path, 200, 64, "--method", "duodec", "--draft", str(tiny["draft"]) + ".gguf",
                            "--worker", worker, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for_lines(out, 2, proc)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    said = [line for line in err.splitlines() if "interrupted after" in line]
    assert len(said) == 1 and "rerun the same command to resume" in said[0]
    kept = len(answers.repair(out))
    assert said[0].startswith(f"interrupted after {kept} answers")
    assert len(set(r["question_id"] for r in answers.repair(out))) == kept


def test_killed_worker_names_signal_and_question(tiny, tmp_path):
    proc, out, _ = long_run(tiny, tmp_path, 200, 64, "--method", "duodec", "--draft", str(tiny["draft"]) + ".gguf",
                            "--worker", "process")
    wait_for_lines(out, 2, proc)
    workers = [c for c in children(proc.pid) if "resource_tracker" not in Path(f"/proc/{c}/cmdline").read_text()]
    for w in workers:
        os.kill(w, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    p = subprocess.CompletedProcess(proc.args, proc.returncode, "", err)
    one_error(p, 1, "killed by SIGKILL", "question")


def test_corrupt_middle_line_is_one_line_and_repairable(tiny, qfile, tmp_path):
    out = tmp_path / "a.jsonl"
    assert infer(tiny, qfile, out, "--limit", 3).returncode == 0
    lines = out.read_text().splitlines()
    out.write_text("\n".join([lines[0], "{garbage", *lines[1:]]) + "\n")
    one_error(infer(tiny, qfile, out), 1, f"{out}:2", "--repair")
    with pytest.raises(answers.AnswerFileError, match=f"{out}:2"):
        infer(tiny, qfile, out, "--debug")  # developers keep their traceback: the exception itself
    assert infer(tiny, qfile, out, "--repair").returncode == 0
    assert sorted(r["question_id"] for r in answers.repair(out)) == [q["question_id"] for q in QS]
    assert (tmp_path / "a.jsonl.bad").read_text() == "{garbage\n"


# -- 5. the draft's whole vocabulary is compared ------------------------------------------------------

def test_draft_with_two_swapped_tokens_is_refused(tiny, qfile, tmp_path):
    from src.tools.convert_to_gguf import convert
    swapped = tmp_path / "swapped"
    shutil.copytree(tiny["draft"], swapped)
    tok = json.loads((swapped / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = (t for t, i in vocab.items() if i in (100, 101))
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (swapped / "tokenizer.json").write_text(json.dumps(tok))
    convert(swapped, tmp_path / "swapped.gguf", "f32")
    one_error(infer(tiny, qfile, tmp_path / "a.jsonl", "--method", "sps", "--draft", tmp_path / "swapped.gguf"),
              1, "token strings differ", "id 100")
