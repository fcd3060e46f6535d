"""Stand-ins for the upstream models: tiny random Llamas carrying the real Llama-2 tokenizer, laid out as
the registry (src/utils.py) expects under DUODEC_MODELS_DIR, so the upstream grid runs end to end.

    python -m src.tools.make_standins OUT_DIR [--vocab ggml-vocab-llama-spm.gguf]
    DUODEC_MODELS_DIR=OUT_DIR GRID_LIMIT=2 GRID_TOKENS=16 bash cmds/duodec_llama.sh

Writes Llama-2-7b-chat-hf/, vicuna-7b-v1.5/ and vicuna-68m/ (HF), vicuna-68m-q5_k_m.gguf (through the
project's converter, as a user converts the real draft) and rest/datastore_chat_large.idx. The tokenizer
is built from llama.cpp's vocabulary file (src/tools/vocab_tokenizer.py); the weights are random.
"""
import argparse
import os
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from src.tools.convert_to_gguf import convert
from src.tools.vocab_tokenizer import hf_tokenizer, read_vocab, reference_cases
from src.utils import ROOT

# registry entry -> (directory name, hidden, layers, seed)
STANDINS = {"llama-2-7b": ("Llama-2-7b-chat-hf", 64, 2, 0), "vicuna-7b-v1.5": ("vicuna-7b-v1.5", 64, 2, 1),
            "vicuna-68m": ("vicuna-68m", 32, 1, 2)}


def vocab_dir():
    """Where llama.cpp's vocabulary files are: $VOCAB_DIR, ../shared/data/vocab or data/vocab (or None)."""
    for d in (os.environ.get("VOCAB_DIR"), ROOT.parent / "shared/data/vocab", ROOT / "data/vocab"):
        if d and (Path(d) / "ggml-vocab-llama-spm.gguf").exists():
            return Path(d)
    return None


def tiny_llama(out, tokenizer, hidden, layers, seed):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=hidden // 16, num_key_value_heads=hidden // 16,
                      max_position_embeddings=4096, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False, initializer_range=0.1)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return Path(out)


def make_standins(out, vocab_gguf):
    from src.tools.build_rest_datastore import build
    out = Path(out)
    tokenizer = hf_tokenizer(read_vocab(vocab_gguf))
    dirs = {name: tiny_llama(out / d, tokenizer, h, n, seed) for name, (d, h, n, seed) in STANDINS.items()}
    convert(dirs["vicuna-68m"], out / "vicuna-68m-q5_k_m.gguf", "q5_k_m")
    texts = [t for t, _ in reference_cases(vocab_gguf) if t.strip()] * 4
    build(texts, tokenizer, out / "rest/datastore_chat_large.idx")
    return dirs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--vocab", default=None, help="ggml-vocab-llama-spm.gguf (default: found as the tests find it)")
    args = ap.parse_args(argv)
    vocab = Path(args.vocab) if args.vocab else (vocab_dir() or Path()) / "ggml-vocab-llama-spm.gguf"
    if not vocab.exists():
        raise SystemExit(f"error: {vocab} not found: run `python data/fetch_vocab.py` or pass --vocab")
    for name, path in make_standins(args.out, vocab).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
