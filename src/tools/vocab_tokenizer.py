"""An HF tokenizer from a llama.cpp vocabulary GGUF, built the way transformers builds the real ones.

    python -m src.tools.vocab_tokenizer VOCAB.gguf OUT_DIR

- SentencePiece (tokenizer.ggml.model "llama": Llama, Llama-2, Vicuna): byte-fallback BPE whose merges are
  every split of a piece into two pieces, ranked by the merged piece's score (what transformers'
  LlamaConverter extracts from tokenizer.model); "▁" for spaces and one before the text; <s> first.
- Byte-level BPE ("gpt2" with pre "llama-bpe": Llama-3): the GGUF's merges, Llama-3's split pattern,
  byte-level mapping, merges ignored for whole-word vocabulary hits; <|begin_of_text|> first.

transformers can read a GGUF's vocabulary itself (gguf_file=), but its result differs from the reference
tokenizations (32 of 47 for Llama-2), so the tokenizer is assembled here from the `tokenizers` parts.
"""
import argparse
import json
from pathlib import Path

import numpy as np
from gguf import GGUFReader, TokenType
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def read_vocab(path):
    r = GGUFReader(path)
    return {"model": field(r, "tokenizer.ggml.model"), "pre": field(r, "tokenizer.ggml.pre"),
            "tokens": field(r, "tokenizer.ggml.tokens"), "scores": field(r, "tokenizer.ggml.scores"),
            "types": field(r, "tokenizer.ggml.token_type"), "merges": field(r, "tokenizer.ggml.merges"),
            "bos": field(r, "tokenizer.ggml.bos_token_id"), "eos": field(r, "tokenizer.ggml.eos_token_id"),
            "unk": field(r, "tokenizer.ggml.unknown_token_id"),
            "add_bos": field(r, "tokenizer.ggml.add_bos_token", True)}


def spm_merges(tokens, scores, types):
    """SentencePiece BPE as merges: every split of a normal piece into two pieces, ranked by the merged
    piece's score (higher first), then by the halves' ranks."""
    rank = {t: i for i, t in enumerate(tokens) if types[i] == TokenType.NORMAL}
    order = np.argsort(-np.asarray(scores), kind="stable")
    score_rank = {tokens[i]: r for r, i in enumerate(order)}
    found = []
    for piece in rank:
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            if left in rank and right in rank:
                found.append((score_rank[piece], rank[left], rank[right], left, right))
    return [(left, right) for *_, left, right in sorted(found)]


def specials(v):
    return [(i, t) for i, (t, ty) in enumerate(zip(v["tokens"], v["types"]))
            if ty in (TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNKNOWN)]


def build(v):
    """A `tokenizers.Tokenizer` for the vocabulary `v` (read_vocab)."""
    tokens = v["tokens"]
    vocab = {t: i for i, t in enumerate(tokens)}
    if v["model"] == "llama":
        tok = Tokenizer(models.BPE(vocab=vocab, merges=spm_merges(tokens, v["scores"], v["types"]),
                                   unk_token=tokens[v["unk"]], fuse_unk=True, byte_fallback=True))
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
    elif v["model"] == "gpt2" and v["pre"] in ("llama-bpe", "llama3"):
        merges = [tuple(m.split(" ", 1)) for m in v["merges"]]
        tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
        tok.decoder = decoders.ByteLevel()
    else:
        raise ValueError(f"unsupported vocabulary: model {v['model']!r}, pre {v['pre']!r}")
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for _, t in specials(v)])
    if v["add_bos"] and v["bos"] is not None:
        bos = tokens[v["bos"]]
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, v["bos"])])
    return tok


def hf_tokenizer(v):
    tokens = v["tokens"]
    name = lambda key: tokens[v[key]] if v.get(key) is not None else None
    return PreTrainedTokenizerFast(tokenizer_object=build(v), bos_token=name("bos"), eos_token=name("eos"),
                                   unk_token=name("unk"), clean_up_tokenization_spaces=False,
                                   add_bos_token=bool(v["add_bos"]))


def save(vocab_gguf, out_dir):
    tok = hf_tokenizer(read_vocab(vocab_gguf))
    tok.save_pretrained(out_dir)
    return tok


def reference_cases(vocab_gguf):
    """llama.cpp's test texts and their token ids (without BOS) beside a vocabulary file."""
    texts = Path(str(vocab_gguf) + ".inp").read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    ids = Path(str(vocab_gguf) + ".out").read_text(encoding="utf-8").split("\n")
    return [(t, [int(x) for x in line.split()]) for t, line in zip(texts, ids)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("vocab")
    ap.add_argument("out")
    args = ap.parse_args(argv)
    tok = save(args.vocab, args.out)
    print(f"wrote {args.out} ({len(tok)} tokens)")
    print(json.dumps(tok.convert_ids_to_tokens(tok("Hello world")["input_ids"])))


if __name__ == "__main__":
    main()
