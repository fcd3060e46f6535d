"""Answer files: one JSON line per question, appended and flushed, so an interrupted run loses nothing.

A file belongs to one run configuration (each answer records it under "config"), and one writer at a
time (an exclusive lock beside it, naming the holder's PID).
"""
import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path

from src.eval.questions import MT_BENCH_CATEGORIES


class AnswerFileError(ValueError):
    pass


def lines_of(path):
    return Path(path).read_bytes().split(b"\n")


def repair(path, move_bad=False):
    """Drop a half-written last line (a crash mid-write) and return the answers already complete.

    A malformed line anywhere else is an error: it was not written by an interrupted run. With move_bad,
    such lines are moved to PATH.bad instead, and the rest kept."""
    path = Path(path)
    if not path.exists():
        return []
    lines = lines_of(path)
    answers, keep, bad = [], [], []
    for i, line in enumerate(lines):
        last = i == len(lines) - 1
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            complete = isinstance(record, dict) and "question_id" in record
        except json.JSONDecodeError:
            complete = False
        if complete and not last:
            answers.append(record)
            keep.append(line)
        elif last or all(not rest.strip() for rest in lines[i + 1:]):
            break  # a torn last line: redone
        elif move_bad:
            bad.append(line)
        else:
            raise AnswerFileError(f"{path}:{i + 1}: malformed answer line, not a torn last line (rerun with "
                                  f"--repair to move such lines to {path.name}.bad)")
    if bad:
        with open(path.with_name(path.name + ".bad"), "ab") as f:
            f.write(b"\n".join(bad) + b"\n")
    data = b"".join(line + b"\n" for line in keep)
    if data != path.read_bytes():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return answers


def append(path, record):
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def load(path):
    """Answers of a file, last one per question id winning, sorted by question id (Spec-Bench's convention)."""
    path = Path(path)
    if not path.exists():
        raise AnswerFileError(f"answer file not found: {path}")
    by_id = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise AnswerFileError(f"{path}:{lineno}: malformed answer line ({e.msg})") from None
            if not isinstance(record, dict) or "question_id" not in record:
                raise AnswerFileError(f"{path}:{lineno}: not an answer (no question_id)")
            if record.get("category") in MT_BENCH_CATEGORIES:  # Spec-Bench's label for MT-bench's sub-categories
                record["subcategory"], record["category"] = record["category"], "mt_bench"
            by_id[record["question_id"]] = record
    return [by_id[k] for k in sorted(by_id, key=lambda k: (isinstance(k, str), k))]


_held = set()  # answer files this process holds: taking one again is a no-op


@contextmanager
def locked(paths):
    """Hold an exclusive lock on each answer file for the whole run: a second writer is refused."""
    held = []
    try:
        for path in paths:
            lock_path = Path(path).with_name(f".{Path(path).name}.lock").resolve()
            if lock_path in _held:
                continue
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            f = open(lock_path, "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "unknown"
                f.close()
                raise AnswerFileError(f"{path} is being written by another process (PID {holder}); wait for it "
                                      f"or stop it") from None
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            held.append((lock_path, f))
            _held.add(lock_path)
        yield
    finally:
        for lock_path, f in held:
            _held.discard(lock_path)
            f.close()  # closing releases the lock


def check_config(path, records, config, force=False):
    """Refuse to resume `path` (holding `records`) under another configuration than its answers'."""
    old = next((a.get("config") for a in records if a.get("config") is not None), None)
    if old is None or config is None or force:
        return
    diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
    if diff:
        named = "; ".join(f"{k}: {old.get(k)!r} in the file, {config.get(k)!r} now" for k in diff)
        raise AnswerFileError(f"{path} holds answers of another configuration ({named}): use another "
                              f"--answer-file, or --force-resume to mix them")
