"""Two commits on one host: each run's overall speedup over AR (of the same run), per method, and the median over
each commit's runs. The runs should alternate between the commits (cmds/ab_demo.sh does), so that a host's slow
spell falls on both.

    python -m src.eval.ab --a RUN_DIR... --b RUN_DIR... [--labels OLD NEW]
"""
import argparse
import json
import statistics
from pathlib import Path

from src.eval.answers import load
from src.eval.cli import run_cli
from src.eval.speed import compare


def speedups(folder):
    """{method: overall speedup over AR} of one compare run folder."""
    folder = Path(folder)
    base = load(folder / "ar.jsonl")
    return {f.stem: compare(load(f), base)["overall"]["speedup"] for f in sorted(folder.glob("*.jsonl"))
            if f.stem != "ar"}


def table(runs, labels):
    """Markdown: one row per method, each run's speedup per commit, and each commit's median."""
    per = {label: [speedups(f) for f in folders] for label, folders in zip(labels, runs)}
    methods = sorted({m for rs in per.values() for r in rs for m in r})
    lines = [f"| method | {' | '.join(f'{label} runs | {label} median' for label in labels)} |",
             "|---|" + "---|---|" * len(labels)]
    for m in methods:
        cells = []
        for label in labels:
            xs = [r[m] for r in per[label] if m in r]
            cells += [", ".join(f"{x:.2f}" for x in xs) or "-", f"{statistics.median(xs):.2f}" if xs else "-"]
        lines.append(f"| {m} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", nargs="+", required=True, help="the first commit's run folders")
    ap.add_argument("--b", nargs="+", required=True, help="the second commit's run folders")
    ap.add_argument("--labels", nargs=2, default=["a", "b"])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.json:
        print(json.dumps({label: [speedups(f) for f in fs] for label, fs in zip(args.labels, (args.a, args.b))}))
    else:
        print(table((args.a, args.b), args.labels))


if __name__ == "__main__":
    run_cli(main)
