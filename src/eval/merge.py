"""Join the answer files of a sharded run into one, rejecting duplicates and (with the questions) gaps.

    python -m src.eval.merge --out answers.jsonl answers.shard*of4.jsonl [--bench NAME | --question-file F]
"""
import argparse
import sys
from pathlib import Path

from src.eval import answers
from src.eval.cli import run_cli
from src.eval.questions import questions_for


def merge(paths, expected_ids=None):
    seen, merged = {}, []
    for path in paths:
        for record in answers.repair(path):
            qid = record["question_id"]
            if qid in seen:
                raise ValueError(f"question {qid!r} answered twice ({seen[qid]} and {path})")
            seen[qid] = path
            merged.append(record)
    if expected_ids is not None:
        missing = [q for q in expected_ids if q not in seen]
        extra = [q for q in seen if q not in set(expected_ids)]
        if missing or extra:
            raise ValueError(f"{len(missing)} questions missing (first: {missing[:5]}), "
                             f"{len(extra)} unexpected (first: {extra[:5]})")
    return sorted(merged, key=lambda r: (isinstance(r["question_id"], str), r["question_id"]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--out", required=True)
    ap.add_argument("--bench", default=None, help="check that every question of this bench is answered")
    ap.add_argument("--question-file", default=None)
    ap.add_argument("--limit", type=int, default=None, help="the --limit the shards ran with")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = ap.parse_args(argv)
    if Path(args.out).exists() and not args.overwrite:
        sys.exit(f"error: {args.out} exists: merging would replace it; pass --overwrite to do so")
    expected = None
    if args.bench or args.question_file:
        expected = [q["question_id"] for q in questions_for(args.bench, args.question_file)[:args.limit]]
    records = merge(args.files, expected)
    open(args.out, "w").close()
    for r in records:
        answers.append(args.out, r)
    print(f"merged {len(records)} answers from {len(args.files)} files into {args.out}")


if __name__ == "__main__":
    run_cli(main)
