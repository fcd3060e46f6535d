"""Convert an HF Llama or Qwen2 directory to a GGUF that llama.cpp loads with the same token ids.

    python -m src.tools.convert_to_gguf HF_DIR OUT.gguf --dtype f32|f16|q8_0|q4_0|q4_k_m|q5_k_m

The tensors go through the `gguf` package's writer and name map. Two tokenizer kinds are embedded:
byte-level BPE (llama.cpp "gpt2", with Qwen2's pre-tokenizer for Qwen2 models) and SentencePiece-style BPE
with byte fallback ("llama"); the chat template goes along.
Quantized types are made as llama.cpp makes them: an f16 GGUF first, then llama.cpp's own quantizer
(`llama_model_quantize`), which also picks the mixed per-tensor types of Q4_K_M and Q5_K_M.
"""
import argparse
import ctypes
import json
from pathlib import Path

import gguf
import numpy as np
import torch
from safetensors.torch import load_file
from transformers import AutoConfig

FILE_TYPES = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16}
# llama_ftype values of llama.cpp's quantizer
QUANT_TYPES = {"q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
               "q4_k_m": gguf.LlamaFileType.MOSTLY_Q4_K_M, "q5_k_m": gguf.LlamaFileType.MOSTLY_Q5_K_M}
DTYPES = [*FILE_TYPES, *QUANT_TYPES]
# model_type -> (llama.cpp architecture, q/k rows permuted to llama.cpp's rotary layout, byte-level BPE pre-tokenizer).
# Qwen2 uses NeoX-style rotary embeddings, which llama.cpp reads in HF's layout; its q/k/v biases map by name.
ARCHS = {"llama": (gguf.MODEL_ARCH.LLAMA, True, "gpt-2"), "qwen2": (gguf.MODEL_ARCH.QWEN2, False, "qwen2")}


def rotary_permute(w, n_heads):
    """HF stores q/k rows as two rotary halves per head; llama.cpp wants them interleaved."""
    rows, cols = w.shape
    return w.reshape(n_heads, 2, rows // n_heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def load_state(hf_dir):
    files = sorted(Path(hf_dir).glob("*.safetensors"))
    if files:
        state = {}
        for f in files:
            state.update(load_file(f))
        return state
    bins = sorted(Path(hf_dir).glob("pytorch_model*.bin"))
    if not bins:
        raise FileNotFoundError(f"no *.safetensors or pytorch_model*.bin weights in {hf_dir}")
    state = {}
    for f in bins:
        state.update(torch.load(f, map_location="cpu", weights_only=True))
    return state


def merge_scores(tokens, merges, types):
    """Scores that make llama.cpp's SentencePiece tokenizer merge as the HF BPE does: it merges the pair
    whose result scores highest, HF the pair of lowest merge rank; so a piece scores minus the rank of
    the first merge that makes it. (Vocabulary order is not merge order for Llama: by id, '▁▁' would
    beat '▁Hello'.) Pieces no merge makes come after every merged one."""
    rank = {}
    for r, m in enumerate(merges):
        left, right = m.split(" ", 1) if isinstance(m, str) else m
        rank.setdefault(left + right, r)
    unmerged = -float(len(merges))
    return [0.0 if types[i] != gguf.TokenType.NORMAL else -float(rank[t]) if t in rank else unmerged - i
            for i, t in enumerate(tokens)]


def add_tokenizer(writer, hf_dir, cfg, pre="gpt-2"):
    tok = json.loads((Path(hf_dir) / "tokenizer.json").read_text())
    model = tok["model"]
    if model["type"] != "BPE":
        raise ValueError(f"unsupported tokenizer model {model['type']!r}; only BPE tokenizers are converted")
    vocab = dict(model["vocab"])
    specials, user_defined = {}, set()
    for added in tok.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
        if added.get("special"):
            specials[added["content"]] = added["id"]
        else:  # matched whole in the text, as llama.cpp's own converter marks them
            user_defined.add(added["content"])
    n_vocab = cfg.vocab_size
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    for text, i in vocab.items():
        if i < n_vocab:
            tokens[i] = text
    types = [gguf.TokenType.NORMAL] * n_vocab
    for i, text in enumerate(tokens):
        if text.startswith("[PAD"):
            types[i] = gguf.TokenType.UNUSED
        elif text in specials:
            types[i] = gguf.TokenType.UNKNOWN if text == model.get("unk_token") else gguf.TokenType.CONTROL
        elif text in user_defined:
            types[i] = gguf.TokenType.USER_DEFINED
    sentencepiece_style = bool(model.get("byte_fallback"))
    if sentencepiece_style:
        writer.add_tokenizer_model("llama")
        for i, text in enumerate(tokens):
            if len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
                types[i] = gguf.TokenType.BYTE
        writer.add_token_scores(merge_scores(tokens, model.get("merges", []), types))
    else:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
        if not merges:
            raise ValueError("byte-level BPE tokenizer without merges: llama.cpp cannot load it")
        writer.add_token_merges(merges)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    tcfg_path = Path(hf_dir) / "tokenizer_config.json"
    tcfg = json.loads(tcfg_path.read_text()) if tcfg_path.exists() else {}
    for key, setter in (("bos_token", writer.add_bos_token_id), ("eos_token", writer.add_eos_token_id),
                        ("unk_token", writer.add_unk_token_id)):
        name = tcfg.get(key)
        name = name.get("content") if isinstance(name, dict) else name
        if name in vocab:
            setter(vocab[name])
    post = json.dumps(tok.get("post_processor") or {})
    writer.add_add_bos_token(sentencepiece_style or '"<s>"' in post or tcfg.get("add_bos_token", False))
    writer.add_add_eos_token(False)
    template = Path(hf_dir) / "chat_template.jinja"
    template = template.read_text() if template.exists() else tcfg.get("chat_template")
    if isinstance(template, str):
        writer.add_chat_template(template)


def quantize(in_path, out_path, dtype, threads=0):
    """llama.cpp's quantizer on an f16/f32 GGUF."""
    import llama_cpp

    from src.backends.draft import init_backend
    init_backend()  # llama.cpp's log, errors only
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(QUANT_TYPES[dtype])
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(in_path).encode(), str(out_path).encode(), ctypes.byref(params))
    if rc != 0:
        raise ValueError(f"llama_model_quantize failed ({rc}) on {in_path}")
    return Path(out_path)


def convert(hf_dir, out_path, dtype="f16"):
    """Write HF_DIR as a GGUF of `dtype` (see DTYPES); quantized types go through an f16 file beside OUT."""
    hf_dir, out_path = Path(hf_dir), Path(out_path)
    if dtype in QUANT_TYPES:
        f16 = out_path.with_name(out_path.stem + ".f16.tmp.gguf")
        try:
            write_gguf(hf_dir, f16, "f16")
            return quantize(f16, out_path, dtype)
        finally:
            f16.unlink(missing_ok=True)
    if dtype not in FILE_TYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    return write_gguf(hf_dir, out_path, dtype)


def write_gguf(hf_dir, out_path, dtype):
    if not (hf_dir / "config.json").exists():
        raise FileNotFoundError(f"{hf_dir} is not an HF model directory (no config.json)")
    cfg = AutoConfig.from_pretrained(hf_dir)
    if cfg.model_type not in ARCHS:
        raise ValueError(f"only {' and '.join(ARCHS)} models are converted, not {cfg.model_type!r}")
    arch, permute, pre = ARCHS[cfg.model_type]
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    rope = getattr(cfg, "rope_parameters", None) or {}
    rope_theta = rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))

    writer = gguf.GGUFWriter(str(out_path), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(hf_dir.name)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope_theta))
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(FILE_TYPES[dtype])
    add_tokenizer(writer, hf_dir, cfg, pre)

    names = gguf.get_tensor_name_map(arch, cfg.num_hidden_layers)
    for hf_name, tensor in load_state(hf_dir).items():
        if hf_name.endswith("rotary_emb.inv_freq"):
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ValueError(f"cannot map tensor {hf_name!r} to GGUF")
        data = tensor.float().numpy()
        if permute and hf_name.endswith("q_proj.weight"):
            data = rotary_permute(data, n_head)
        elif permute and hf_name.endswith("k_proj.weight"):
            data = rotary_permute(data, n_kv)
        if data.ndim == 1 or dtype == "f32":  # norms stay f32, as llama.cpp expects
            writer.add_tensor(name, data.astype(np.float32))
        else:
            writer.add_tensor(name, data.astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("hf_dir")
    ap.add_argument("out")
    ap.add_argument("--dtype", default="f16", choices=DTYPES)
    args = ap.parse_args(argv)
    try:
        path = convert(args.hf_dir, args.out, args.dtype)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
