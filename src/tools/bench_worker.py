"""Per-round communication overhead of DuoDecoding's draft worker, thread vs process.

    python -m src.tools.bench_worker [--rounds 2000]

Times a round trip (submit a job, get its result) for a job that does nothing, so what is left is
the hand-over cost the decoding loop pays every round. Median and 90th percentile, in ms.
"""
import argparse
import json
import time

from src.backends.draft import Draft
from src.model.duodec import ProcessWorker, ThreadWorker
from src.utils import resolve


class Noop:
    """A job that drafts nothing: what is left of a round trip is the hand-over."""

    def run(self, drafter, cancel):
        return [[]]


def round_trips(worker, rounds):
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        worker.submit(Noop())
        worker.result()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"median_ms": round(times[len(times) // 2] * 1e3, 4), "p90_ms": round(times[int(len(times) * 0.9)] * 1e3, 4)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--draft", default="demo-draft-gguf")
    ap.add_argument("--rounds", type=int, default=2000)
    args = ap.parse_args(argv)
    draft = Draft(resolve(args.draft, "--draft")[0], n_ctx=256)
    out = {}
    for name, cls in (("thread", ThreadWorker), ("process", ProcessWorker)):
        worker = cls(draft)
        round_trips(worker, 100)  # warm-up
        out[name] = round_trips(worker, args.rounds)
        worker.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
