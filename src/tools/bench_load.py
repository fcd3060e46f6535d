"""DuoDecoding beside a background load: the demo comparison (AR, SpS with the GGUF draft, DuoDecoding) run on
a quiet machine, beside one busy process, and beside a load that comes and goes, each in its own run folder.

    python -m src.tools.bench_load [--limit 40] [--period 3] [--out results/load-cpu/runs/<date>-<host>]
    python -m src.tools.bench_load --real [--per-category 1]   # the real pair (fetched), as cmds/real_cpu.sh runs it

The load is a Python busy loop at normal priority, started and stopped by this script (paused and resumed
every --period seconds for the intermittent case). Prints, per condition, DuoDecoding over SpS-GGUF and over
AR (mean of per-question speeds, median per-question ratio) and how many rounds DuoDecoding ran in each mode.
"""
import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from src.eval import answers
from src.eval.compare import main as compare_main
from src.eval.host import host_tag, machine, native_bf16
from src.eval.speed import compare
from src.utils import ROOT

CONDITIONS = ("quiet", "busy", "intermittent")


class Load:
    """A busy process at normal priority; with `period`, paused and resumed every `period` seconds."""

    def __init__(self, period=None):
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        self.period, self.stop = period, threading.Event()
        self.thread = threading.Thread(target=self.toggle, daemon=True) if period else None
        if self.thread:
            self.thread.start()

    def toggle(self):
        running = True
        while not self.stop.wait(self.period):
            running = not running
            self.proc.send_signal(signal.SIGCONT if running else signal.SIGSTOP)

    def close(self):
        self.stop.set()
        if self.thread:
            self.thread.join()
        self.proc.send_signal(signal.SIGCONT)
        self.proc.kill()
        self.proc.wait()


def summary(folder):
    """(DuoDecoding / SpS-GGUF, DuoDecoding / AR, SpS-GGUF / AR), each as (speedup, median ratio), and the
    mode counts of DuoDecoding's rounds."""
    runs = {name: answers.load(folder / f"{name}.jsonl") for name in ("ar", "sps-gguf", "duodec", "duodec-previous")}
    pair = lambda a, b: compare(runs[a], runs[b])["overall"]
    out = {f"{a}/{b}": (round(r["speedup"], 3), round(r["median_ratio"], 3))
           for a, b in (("duodec", "sps-gguf"), ("duodec", "ar"), ("duodec-previous", "sps-gguf"), ("duodec-previous", "ar"),
                        ("sps-gguf", "ar")) for r in [pair(a, b)]}
    modes = Counter()
    for r in runs["duodec"]:
        for st in r["choices"][0]["stats"]:
            modes.update(st.get("mode_rounds", {}))
    out["duodec_mode_rounds"] = dict(modes)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--period", type=float, default=3.0, help="seconds the intermittent load is on, then off")
    ap.add_argument("--out", default=None)
    ap.add_argument("--conditions", default=",".join(CONDITIONS))
    ap.add_argument("--real", action="store_true", help="the real Qwen2.5-Coder pair over Spec-Bench and HumanEval "
                    "(64 tokens, --per-category questions each, bf16 where the CPU computes it) instead of the demo")
    ap.add_argument("--per-category", type=int, default=1)
    args = ap.parse_args(argv)
    if args.real:
        bench = ["--bench", "spec_bench_humaneval", "--per-category", str(args.per_category), "--max-new-tokens", "64",
                 "--target", "qwen-coder-1.5b", "--gguf-draft", "qwen-coder-0.5b-gguf", "--dtype",
                 "bf16" if native_bf16() else "fp32", "--warmup", "1"]
    else:
        bench = ["--bench", "demo", "--limit", str(args.limit)]
    out = Path(args.out) if args.out else ROOT / f"results/load-{'real-' if args.real else ''}cpu/runs" / \
        f"{time.strftime('%Y%m%d-%H%M%S')}-{host_tag(machine())}"
    results = {}
    for cond in args.conditions.split(","):
        load = None if cond == "quiet" else Load(args.period if cond == "intermittent" else None)
        try:
            compare_main([*bench, "--methods", "ar,sps-gguf,duodec,duodec-previous",
                          "--device", "cpu", "--target-threads", "1", "--draft-threads", "1", "--out", str(out / cond)])
        finally:
            if load:
                load.close()
        results[cond] = summary(out / cond)
    (out / "summary.json").write_text(json.dumps(results, indent=1) + "\n")
    what = f"the real pair, {args.per_category} question(s) per category" if args.real else f"demo, {args.limit} prompts"
    lines = [f"# DuoDecoding beside a background load: {what}, {machine()['cpu']}", "",
             "| condition | DuoDecoding / SpS-GGUF | DuoDecoding / AR | --mode auto / SpS-GGUF | --mode auto / AR | "
             "SpS-GGUF / AR | DuoDecoding's rounds by mode |", "|---|---|---|---|---|---|---|"]
    fmt = lambda v: f"{v[0]:.2f} ({v[1]:.2f})"
    for cond, r in results.items():
        lines.append(f"| {cond} | {fmt(r['duodec/sps-gguf'])} | {fmt(r['duodec/ar'])} | {fmt(r['duodec-previous/sps-gguf'])} "
                     f"| {fmt(r['duodec-previous/ar'])} | {fmt(r['sps-gguf/ar'])} | {r['duodec_mode_rounds']} |")
    text = "\n".join(lines) + "\n\nMean of per-question speeds, median per-question ratio in brackets.\n"
    (out / "table.md").write_text(text)
    print(text)
    print(f"run folders: {out}")


if __name__ == "__main__":
    main()
