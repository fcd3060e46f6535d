"""Fetch llama.cpp's vocabulary-only GGUFs and reference tokenizations into data/vocab/ (not shipped).

    python data/fetch_vocab.py

They come from the llama-cpp-python source distribution pinned in requirements.txt, which carries them
under vendor/llama.cpp/models/: Llama / Llama-2 SentencePiece (ggml-vocab-llama-spm) and Llama-3 BPE
(ggml-vocab-llama-bpe), each with `.inp` texts and `.out` token ids. The tests look for them in
$VOCAB_DIR, then ../shared/data/vocab, then data/vocab.
"""
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAMES = [f"ggml-vocab-llama-{kind}.gguf{ext}" for kind in ("spm", "bpe") for ext in ("", ".inp", ".out")]


def main():
    pin = next(line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
               if line.startswith("llama-cpp-python=="))
    out = ROOT / "data/vocab"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        p = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", pin,
                            "-d", tmp], capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"error: pip could not download {pin}: {p.stderr.strip().splitlines()[-1:]}")
        sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if name in NAMES and "/vendor/llama.cpp/models/" in member.name:
                    (out / name).write_bytes(tar.extractfile(member).read())
                    print(f"wrote {out / name}")
    missing = [n for n in NAMES if not (out / n).exists()]
    if missing:
        sys.exit(f"error: not in the source distribution: {', '.join(missing)}")


if __name__ == "__main__":
    main()
