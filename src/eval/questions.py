"""Benchmarks and question files (Spec-Bench format, HumanEval format, the demo prompts)."""
import json
import os
from pathlib import Path

from src.utils import ROOT

SPEC_BENCH = ["mt_bench", "translation", "summarization", "qa", "math_reasoning", "rag"]
BENCHES = {name: [name] for name in SPEC_BENCH}
# MT-bench questions carry MT-bench's own categories; Spec-Bench reports them together as mt_bench
MT_BENCH_CATEGORIES = {"writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"}
BENCHES.update({"spec_bench": SPEC_BENCH, "humaneval": ["humaneval"], "spec_bench_humaneval": SPEC_BENCH + ["humaneval"],
                "demo": ["code", "code-cont"]})


# HumanEval/n becomes question n + 1000: Spec-Bench's ids run to 560, and one run holds both
HUMANEVAL_ID_BASE = 1000


class QuestionFileError(ValueError):
    pass


def specbench_dir():
    """Where the Spec-Bench and HumanEval files are: $SPECBENCH_DIR, ../shared/data/specbench, or data/specbench."""
    for d in (os.environ.get("SPECBENCH_DIR"), ROOT.parent / "shared/data/specbench", ROOT / "data/specbench"):
        if d and Path(d).is_dir():
            return Path(d)
    raise FileNotFoundError("no Spec-Bench data found: run `python data/download_specbench.py`, "
                            "set SPECBENCH_DIR, or pass --question-file")


def default_files(bench):
    if bench == "demo":
        return [ROOT / "data/demo/questions.jsonl"]
    d = specbench_dir()
    combined = d / "question.jsonl"
    files = []
    for cat in BENCHES[bench]:
        f = d / f"{cat}.jsonl"
        files.append(f if f.exists() or not combined.exists() else combined)
    return list(dict.fromkeys(files))


def normalise(record, where):
    """A Spec-Bench question as is; a HumanEval task becomes one with its prompt as the only turn."""
    if "task_id" in record and "prompt" in record:
        if not str(record["prompt"]).strip():
            raise QuestionFileError(f"{where}: task {record['task_id']} has an empty prompt")
        return {"question_id": HUMANEVAL_ID_BASE + int(str(record["task_id"]).rsplit("/", 1)[-1]), "category": "humaneval",
                "turns": [record["prompt"]]}
    if "question_id" not in record or "turns" not in record:
        raise QuestionFileError(f"{where}: a question needs 'question_id' and 'turns' (or HumanEval's "
                                f"'task_id' and 'prompt')")
    turns = record["turns"]
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
        raise QuestionFileError(f"{where}: 'turns' must be a non-empty list of strings")
    empty = [i + 1 for i, t in enumerate(turns) if not t.strip()]
    if empty:
        raise QuestionFileError(f"{where}: question {record['question_id']} has an empty turn {empty[0]}")
    category = record.get("category", "unknown")
    if category in MT_BENCH_CATEGORIES:
        return {"question_id": record["question_id"], "category": "mt_bench", "subcategory": category,
                "turns": turns}
    return {"question_id": record["question_id"], "category": category, "turns": turns}


def load_questions(path):
    path = Path(path)
    if not path.is_file():
        raise QuestionFileError(f"question file not found: {path}")
    out = []
    for lineno, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        where = f"{path}:{lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise QuestionFileError(f"{where}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})") \
                from None
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise QuestionFileError(f"{where}: malformed JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise QuestionFileError(f"{where}: expected a JSON object")
        out.append(normalise(record, where))
    seen = set()
    for q in out:
        if q["question_id"] in seen:
            raise QuestionFileError(f"{path}: question id {q['question_id']!r} appears twice")
        seen.add(q["question_id"])
    return out


# Where each split starts in every category's file order: defaults are chosen on dev, the README reports test
SPLITS = {"dev": 0, "test": 10}


def per_category(questions, n, start=0):
    """Questions start .. start + n - 1 (0-based) of each category, taken in turns (one of each category, then
    the next), so that a run cut short by a time budget still covers every category."""
    by_cat = {}
    for q in questions:
        by_cat.setdefault(q["category"], []).append(q)
    return [qs[i] for i in range(start, start + n) for qs in by_cat.values() if i < len(qs)]


def questions_for(bench=None, question_file=None):
    """The questions of a bench (from its default files or from `question_file`), in file order."""
    if bench is not None and bench not in BENCHES:
        raise QuestionFileError(f"unknown bench {bench!r}; choose from {', '.join(BENCHES)}")
    files = [question_file] if question_file else default_files(bench)
    questions = [q for f in files for q in load_questions(f)]
    if bench:
        questions = [q for q in questions if q["category"] in BENCHES[bench]]
    if not questions:
        raise QuestionFileError(f"no questions for bench {bench!r} in {', '.join(map(str, files))}")
    return questions
