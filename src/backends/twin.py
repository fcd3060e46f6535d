"""Cost-matched twins: a trained HF Llama enlarged so that it computes the same function at a larger shape.

A twin of the demo target at Llama-2-7B's shape runs a real 7B-cost forward with the demo pair's
acceptance. The enlargement (hidden d -> D, layers L -> L', FFN f -> F, head_dim kept):
- every writer into the residual stream is zero where it would write dims >= d (the embedding's
  columns, o_proj and down_proj rows), so the stream stays the source's, zero-padded;
- RMSNorm weights are scaled by sqrt(d/D) and rms_norm_eps by d/D, so the padded vector normalises
  exactly as the original;
- extra heads and FFN units read the stream (random weights) and write nothing (zero o_proj columns,
  down_proj columns); extra layers write nothing at all;
- weights that only ever read zeros are random, not zero, so no kernel can skip them.
No library does this; it is written here.
"""
import copy
import math
import re

import torch

# named shapes; within 5 % of the reference parameter counts with the demo's 4096-token vocabulary
SHAPES = {"llama-2-7b": (4096, 32, 11008), "vicuna-68m": (768, 7, 2816)}
REFERENCE_PARAMS = {"llama-2-7b": 6_738_415_616, "vicuna-68m": 68_030_208}
INIT_STD = 0.02


class TwinError(ValueError):
    pass


def parse_shape(shape):
    """A named shape or 'DxLxF' (hidden x layers x FFN) -> (hidden, layers, ffn)."""
    if shape in SHAPES:
        return SHAPES[shape]
    m = re.fullmatch(r"(\d+)x(\d+)x(\d+)", shape)
    if not m:
        raise TwinError(f"unknown twin shape {shape!r}: one of {', '.join(SHAPES)} or HIDDENxLAYERSxFFN")
    return tuple(int(x) for x in m.groups())


def head_dim(cfg):
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def twin_config(src, hidden, layers, ffn):
    """The source's config at the new shape: head_dim kept, D / head_dim heads, eps scaled by d / D."""
    hd, d = head_dim(src), src.hidden_size
    kv = src.num_key_value_heads or src.num_attention_heads
    heads = hidden // hd
    if hidden % hd or hidden < d or layers < src.num_hidden_layers or ffn < src.intermediate_size:
        raise TwinError(f"a twin of {d}x{src.num_hidden_layers}x{src.intermediate_size} (head_dim {hd}) needs "
                        f"hidden >= {d} and a multiple of {hd}, layers >= {src.num_hidden_layers}, "
                        f"FFN >= {src.intermediate_size}; got {hidden}x{layers}x{ffn}")
    if (heads * kv) % src.num_attention_heads:
        raise TwinError(f"{heads} heads cannot keep the source's {src.num_attention_heads // kv} queries per KV head")
    if getattr(src, "attention_bias", False) or getattr(src, "mlp_bias", False):
        raise TwinError("twins of Llamas with biases are not supported")
    cfg = copy.deepcopy(src)
    cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size = hidden, layers, ffn
    cfg.num_attention_heads, cfg.num_key_value_heads = heads, heads * kv // src.num_attention_heads
    cfg.head_dim = hd
    cfg.rms_norm_eps = src.rms_norm_eps * d / hidden
    cfg.tie_word_embeddings = False  # the LM head's columns >= d read zeros: random, as a real head
    return cfg


def param_count(cfg):
    """Parameters of a Llama config, by arithmetic (no model is built)."""
    D, F, V, L = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_hidden_layers
    hd, H = head_dim(cfg), cfg.num_attention_heads
    kv = cfg.num_key_value_heads or H
    per_layer = D * hd * (H + 2 * kv) + H * hd * D + 3 * D * F + 2 * D
    return V * D * (1 if cfg.tie_word_embeddings else 2) + L * per_layer + D


@torch.no_grad()
def enlarge(src_model, cfg, device="cpu", dtype=torch.float32, seed=0):
    """Build the twin of `src_model` (an HF Llama) at `cfg` straight on `device`: nothing is written to disk
    and the large model is never initialised on the CPU."""
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        twin = LlamaForCausalLM(cfg).to(dtype)
    twin = twin.to_empty(device=device)
    rotary = type(twin.model.rotary_emb)
    twin.model.rotary_emb = rotary(cfg).to(device)  # its fp32 buffers, computed, not left empty
    gen = torch.Generator(device=device).manual_seed(seed)
    for p in twin.parameters():
        p.normal_(0.0, INIT_STD, generator=gen)
    src = {k: v.to(device=device, dtype=dtype) for k, v in src_model.state_dict().items()}
    src["lm_head.weight"] = src_model.get_output_embeddings().weight.to(device=device, dtype=dtype)
    s_cfg = src_model.config
    d, f, L = s_cfg.hidden_size, s_cfg.intermediate_size, s_cfg.num_hidden_layers
    hd = head_dim(s_cfg)
    q_rows = s_cfg.num_attention_heads * hd
    kv_rows = (s_cfg.num_key_value_heads or s_cfg.num_attention_heads) * hd
    scale = math.sqrt(d / cfg.hidden_size)
    out = twin.state_dict()

    def put(name, rows, cols):
        out[name][:rows, :cols] = src[name]

    out["model.embed_tokens.weight"][:, d:] = 0
    put("model.embed_tokens.weight", s_cfg.vocab_size, d)
    put("lm_head.weight", s_cfg.vocab_size, d)
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        for w in ("self_attn.o_proj", "mlp.down_proj"):
            out[p + w + ".weight"].zero_()
        for norm in ("input_layernorm", "post_attention_layernorm"):
            out[p + norm + ".weight"].fill_(scale)
            if i < L:
                out[p + norm + ".weight"][:d] = src[p + norm + ".weight"] * scale
        if i >= L:
            continue
        put(p + "self_attn.q_proj.weight", q_rows, d)
        put(p + "self_attn.k_proj.weight", kv_rows, d)
        put(p + "self_attn.v_proj.weight", kv_rows, d)
        put(p + "self_attn.o_proj.weight", d, q_rows)
        put(p + "mlp.gate_proj.weight", f, d)
        put(p + "mlp.up_proj.weight", f, d)
        put(p + "mlp.down_proj.weight", d, f)
    out["model.norm.weight"].fill_(scale)
    out["model.norm.weight"][:d] = src["model.norm.weight"] * scale
    twin.eval()
    return twin
