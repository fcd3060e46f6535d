"""Write a cost-matched twin of an HF Llama: the same function at a larger shape (src/backends/twin.py).

    python -m src.tools.make_twin SOURCE OUT_DIR --shape llama-2-7b|vicuna-68m|DxLxF [--gguf q5_k_m]
    python -m src.tools.make_twin SOURCE OUT_DIR --hidden 1024 --layers 8 --ffn 2752
    python -m src.tools.make_twin --counts          # each named shape's parameters against its reference

SOURCE is a registry name or an HF directory. OUT_DIR gets an HF model (safetensors, the source's
tokenizer); --gguf also writes OUT_DIR.gguf through the project's converter. A target twin need not be
written at all: `--target twin:llama-2-7b:demo-target` builds it in memory on the target's device.
"""
import argparse
import shutil
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from src.backends.twin import REFERENCE_PARAMS, SHAPES, TwinError, enlarge, param_count, parse_shape, twin_config
from src.tools.convert_to_gguf import DTYPES, convert
from src.utils import ROOT, ModelNotFound, resolve

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "generation_config.json")


def make_twin(source, out, shape, gguf=None, seed=0):
    path, _ = resolve(source, "SOURCE")
    src = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    cfg = twin_config(src.config, *parse_shape(shape))
    out = Path(out)
    enlarge(src, cfg, seed=seed).save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (Path(path) / name).exists():
            shutil.copy(Path(path) / name, out / name)
    written = [out]
    if gguf:
        written.append(convert(out, out.with_name(out.name + ".gguf"), gguf))
    return cfg, written


def counts(source="demo-target"):
    cfg = AutoConfig.from_pretrained(resolve(source)[0])
    lines = []
    for name, shape in SHAPES.items():
        n = param_count(twin_config(cfg, *shape))
        lines.append(f"{name}: {'x'.join(map(str, shape))} -> {n / 1e6:.1f}M parameters with a "
                     f"{cfg.vocab_size}-token vocabulary, {n / REFERENCE_PARAMS[name]:.3f} of the reference's "
                     f"{REFERENCE_PARAMS[name] / 1e6:.1f}M")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", nargs="?")
    ap.add_argument("out", nargs="?")
    ap.add_argument("--shape", help=f"a named shape ({', '.join(SHAPES)}) or HIDDENxLAYERSxFFN")
    ap.add_argument("--hidden", type=int)
    ap.add_argument("--layers", type=int)
    ap.add_argument("--ffn", type=int)
    ap.add_argument("--gguf", choices=DTYPES, help="also write OUT_DIR.gguf of this type")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random reader weights")
    ap.add_argument("--counts", action="store_true", help="print the named shapes' parameter counts")
    args = ap.parse_args(argv)
    if args.counts:
        print("\n".join(counts(args.source or "demo-target")))
        return
    explicit = (args.hidden, args.layers, args.ffn)
    if not args.source or not args.out or (args.shape is None) == (None in explicit):
        ap.error("give SOURCE OUT_DIR and either --shape or all of --hidden, --layers and --ffn")
    shape = args.shape or "x".join(map(str, explicit))
    try:
        cfg, written = make_twin(args.source, args.out, shape, args.gguf, args.seed)
    except (TwinError, ModelNotFound, FileNotFoundError, ValueError) as e:
        sys.exit(f"error: {e}")
    print(f"twin {shape}: {param_count(cfg) / 1e6:.1f}M parameters; wrote {', '.join(map(str, written))}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
