"""What llama.cpp's weight repacking gives a quantized draft on this CPU, and whether it runs at all.

    python -m src.tools.bench_draft [--hf data/models/demo-draft] [--types f16,q8_0,q4_0,q4_k_m,q5_k_m]
                                    [--threads 1] [--reps 5] [--out results/draft-repack/HOST.json]

Each type is converted from the HF model, then timed with the extra buffer types on and off, in a
fresh process each (a crash there is recorded, not fatal), interleaved over --reps repetitions.
Prints and writes the median ms per single-token step with 64 tokens cached, and 8 sequences batched.
"""
import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from src.backends.draft import extra_buffer_types
from src.tools.convert_to_gguf import convert
from src.utils import ROOT, portable

STEPS = 200


def time_steps(path, repack, threads):
    """Runs in the child process: ms per step for 1 and for 8 sequences."""
    from src.backends.draft import Draft
    d = Draft(path, threads=threads, n_ctx=4096, n_seq=8, repack=repack)
    prompt = list(range(5, 69))
    out = {}
    for k in (1, 8):
        d.clear()
        d.eval(prompt)
        for s in range(1, k):
            d.fork(0, s)
        t0 = time.perf_counter()
        for i in range(STEPS):
            d.decode([(7 + (i + s) % 50, s, True) for s in range(k)])
        out[f"ms_per_step_k{k}"] = 1e3 * (time.perf_counter() - t0) / STEPS
    return out


def measure(path, repack, threads):
    p = subprocess.run([sys.executable, "-m", "src.tools.bench_draft", "--child", str(path), repack, str(threads)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        sig = -p.returncode if p.returncode < 0 else None
        return {"crashed": signal.Signals(sig).name if sig else f"exit code {p.returncode}"}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None):
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(time_steps(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
        return
    from src.eval.host import host_tag, machine
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hf", default=str(ROOT / "data/models/demo-draft"), help="the draft as an HF directory")
    ap.add_argument("--types", default="f16,q8_0,q4_0,q4_k_m,q5_k_m")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    host = machine()
    result = {"machine": host, "extra_buffer_types": extra_buffer_types(), "model": portable(args.hf),
              "threads": args.threads, "types": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in args.types.split(","):
            path = convert(args.hf, Path(tmp) / f"{dtype}.gguf", dtype)
            runs = {"on": [], "off": []}
            for _ in range(args.reps):
                for mode in runs:
                    runs[mode].append(measure(path, mode, args.threads))
            row = {}
            for mode, rs in runs.items():
                crashed = [r["crashed"] for r in rs if "crashed" in r]
                row[mode] = {"crashed": crashed[0]} if crashed else {
                    key: round(statistics.median(r[key] for r in rs), 4) for key in rs[0]}
            result["types"][dtype] = row
            print(f"{dtype:>7}  repack on: {fmt(row['on'])}   off: {fmt(row['off'])}", flush=True)
    out = Path(args.out or ROOT / "results/draft-repack" / f"{Path(args.hf).name}-{host_tag(host)}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


def fmt(r):
    if "crashed" in r:
        return f"crashed ({r['crashed']})"
    return f"{r['ms_per_step_k1']:.3f} ms/step, {r['ms_per_step_k8']:.3f} ms for 8 sequences"


if __name__ == "__main__":
    main()
