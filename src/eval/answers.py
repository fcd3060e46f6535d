"""Answer files: one JSON line per question, appended and flushed, so an interrupted run loses nothing."""
import json
import os
from pathlib import Path


class AnswerFileError(ValueError):
    pass


def repair(path):
    """Drop a half-written last line (a crash mid-write) and return the answers already complete.

    A malformed line anywhere else is an error: it was not written by an interrupted run."""
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    answers, good_bytes = [], 0
    for i, line in enumerate(lines):
        last = i == len(lines) - 1
        if not line.strip():
            good_bytes += len(line) + (0 if last else 1)
            continue
        try:
            record = json.loads(line)
            complete = not last and isinstance(record, dict) and "question_id" in record
        except json.JSONDecodeError:
            complete = False
        if not complete:
            if last or all(not rest.strip() for rest in lines[i + 1:]):
                with open(path, "r+b") as f:  # redo the torn line
                    f.truncate(good_bytes)
                break
            raise AnswerFileError(f"{path}:{i + 1}: malformed answer line (not a torn last line)")
        answers.append(record)
        good_bytes += len(line) + 1
    return answers


def append(path, record):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def load(path):
    """Answers of a file, last one per question id winning, sorted by question id (Spec-Bench's convention)."""
    path = Path(path)
    if not path.exists():
        raise AnswerFileError(f"answer file not found: {path}")
    by_id = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise AnswerFileError(f"{path}:{lineno}: malformed answer line ({e.msg})") from None
            by_id[record["question_id"]] = record
    return [by_id[k] for k in sorted(by_id, key=lambda k: (isinstance(k, str), k))]
