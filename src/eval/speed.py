"""Compare an answer file against a baseline's, per category and overall (Spec-Bench's formula).

    python -m src.eval.speed --file-path METHOD.jsonl --base-path AR.jsonl [--json] [--allow-partial]

Speed of a question = Σ new_tokens / Σ wall_time over its turns; a file's speed is the mean over its
questions; speedup = method speed / baseline speed. "median x" is the median over questions of the
per-question speed ratio. Mean accepted tokens pools every target forward.

Figures that cannot be right are refused: an empty file, a zero or negative time, files of different
benches, or fewer than 90 % of the questions paired (unless --allow-partial).
"""
import argparse
import json
import statistics

from src.eval.answers import load
from src.eval.cli import run_cli


def figures(records):
    speeds, accepts, ttfts = [], [], []
    for r in records:
        c = r["choices"][0]
        speeds.append(question_speed(r))
        accepts.extend(c.get("accept_lengths", []))
        ttfts.extend(c.get("ttft", []) or [])
    return {"questions": len(records), "tokens_per_s": statistics.fmean(speeds) if speeds else 0.0,
            "mean_accepted": statistics.fmean(accepts) if accepts else 0.0,
            "ttft_s": statistics.fmean(ttfts) if ttfts else 0.0}


def question_speed(record):
    c = record["choices"][0]
    return sum(c["new_tokens"]) / max(sum(c["wall_time"]), 1e-12)


def median_ratio(method_records, base_records):
    """Median over questions of method speed / baseline speed: robust to a noisy machine when the two
    answered each question close in time (interleaved runs)."""
    base = {r["question_id"]: question_speed(r) for r in base_records}
    ratios = [question_speed(r) / base[r["question_id"]] for r in method_records if base.get(r["question_id"])]
    return statistics.median(ratios) if ratios else 0.0


class FigureError(ValueError):
    pass


MIN_PAIRED = 0.9


def answered(records, label):
    """The answered records (skipped ones left out), refusing what would make a figure wrong."""
    out = [r for r in records if "skipped" not in r]
    if not out:
        raise FigureError(f"{label} holds no answers")
    for r in out:
        times = r["choices"][0]["wall_time"]
        if not times or min(times) <= 0:
            raise FigureError(f"{label}: question {r['question_id']} has a wall time of {min(times or [0])} s")
    return out


def same_questions(method_records, base_records, labels):
    """Both files must come from the same bench or question file."""
    cfg = [next((r.get("config") for r in recs if r.get("config")), None) or {} for recs in
           (method_records, base_records)]
    for key in ("bench", "question_file"):
        if key in cfg[0] and key in cfg[1] and cfg[0][key] != cfg[1][key]:
            raise FigureError(f"{labels[0]} and {labels[1]} answer different question sets ({key} "
                              f"{cfg[0][key]!r} and {cfg[1][key]!r})")
    cats = [{r["category"] for r in recs} for recs in (method_records, base_records)]
    if not cats[0] & cats[1]:
        raise FigureError(f"{labels[0]} and {labels[1]} share no category ({sorted(cats[0])} against "
                          f"{sorted(cats[1])}): different benches")


def compare(method_records, base_records, allow_partial=False, labels=("the method's file", "the baseline")):
    """{category: figures with speedup and TTFT ratio}, plus "overall"; only questions both files answered."""
    method_records, base_records = answered(method_records, labels[0]), answered(base_records, labels[1])
    same_questions(method_records, base_records, labels)
    base_ids = {r["question_id"] for r in base_records}
    paired = [r for r in method_records if r["question_id"] in base_ids]
    most = max(len(method_records), len(base_records))
    if len(paired) < MIN_PAIRED * most and not allow_partial:
        raise FigureError(f"only {len(paired)} questions are in both files ({labels[0]}: {len(method_records)}, "
                          f"{labels[1]}: {len(base_records)}); --allow-partial compares them anyway")
    counts = {"method_questions": len(method_records), "base_questions": len(base_records), "paired": len(paired)}
    method_records = paired
    ids = {r["question_id"] for r in method_records}
    base_records = [r for r in base_records if r["question_id"] in ids]
    cats = sorted({r["category"] for r in method_records})
    out = {}
    for cat in cats + ["overall"]:
        pick = (lambda r: True) if cat == "overall" else (lambda r, c=cat: r["category"] == c)
        m, b = figures([r for r in method_records if pick(r)]), figures([r for r in base_records if pick(r)])
        m["speedup"] = m["tokens_per_s"] / b["tokens_per_s"] if b["tokens_per_s"] else 0.0
        m["ttft_ratio"] = m["ttft_s"] / b["ttft_s"] if b["ttft_s"] else 0.0
        m["base_tokens_per_s"] = b["tokens_per_s"]
        m["median_ratio"] = median_ratio([r for r in method_records if pick(r)], [r for r in base_records if pick(r)])
        out[cat] = m
    out["overall"].update(counts)
    return out


def table(result, title=None):
    head = f"{'category':<16}{'n':>4}{'tok/s':>10}{'base tok/s':>12}{'speedup':>9}{'median x':>10}" \
           f"{'accepted':>10}{'TTFT ms':>9}{'TTFT x':>8}"
    lines = [title] if title else []
    n = result.get("overall", {})
    if "paired" in n:
        lines.append(f"questions: {n['method_questions']} answered, {n['base_questions']} in the baseline, "
                     f"{n['paired']} paired")
    lines += [head, "-" * len(head)]
    for cat, f in result.items():
        lines.append(f"{cat:<16}{f['questions']:>4}{f['tokens_per_s']:>10.1f}{f['base_tokens_per_s']:>12.1f}"
                     f"{f['speedup']:>9.2f}{f['median_ratio']:>10.2f}{f['mean_accepted']:>10.2f}{f['ttft_s'] * 1000:>9.1f}"
                     f"{f['ttft_ratio']:>8.2f}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file-path", required=True, help="the method's answers")
    ap.add_argument("--base-path", required=True, help="the baseline's (AR) answers")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--allow-partial", action="store_true", help="compare however few questions are paired")
    args = ap.parse_args(argv)
    result = compare(load(args.file_path), load(args.base_path), args.allow_partial,
                     (args.file_path, args.base_path))
    print(json.dumps(result) if args.json else table(result, f"{args.file_path} vs {args.base_path}"))


if __name__ == "__main__":
    run_cli(main)
