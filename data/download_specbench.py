"""Download Spec-Bench's questions and HumanEval into data/specbench/ (third-party texts, not shipped).

    python data/download_specbench.py

The harness looks for them in $SPECBENCH_DIR, then ../shared/data/specbench, then data/specbench.
"""
import gzip
import sys
import urllib.request
from pathlib import Path

SOURCES = {
    "question.jsonl": "https://raw.githubusercontent.com/hemingkx/Spec-Bench/main/data/spec_bench/question.jsonl",
    "humaneval.jsonl": "https://raw.githubusercontent.com/openai/human-eval/master/data/HumanEval.jsonl.gz",
}


def main():
    out = Path(__file__).resolve().parent / "specbench"
    out.mkdir(exist_ok=True)
    for name, url in SOURCES.items():
        try:
            data = urllib.request.urlopen(url, timeout=60).read()
        except OSError as e:
            sys.exit(f"error: could not download {url}: {e}")
        if url.endswith(".gz"):
            data = gzip.decompress(data)
        (out / name).write_bytes(data)
        print(f"wrote {out / name} ({len(data.splitlines())} lines)")


if __name__ == "__main__":
    main()
