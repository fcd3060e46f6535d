"""Train the bundled demo pair: a small Llama target and a smaller, distilled Llama draft.

Corpus: the running interpreter's standard library (.py files, tests excluded), split by a hash
of each file's path into train (~95 %) and held-out (~5 %). Everything is reproducible from
--seed; the time budgets bound the wall time, so the number of steps depends on the machine.

    python -m src.tools.train_demo_pair              # full pair into data/models, prompts into data/demo
    python -m src.tools.train_demo_pair --tiny ...   # a miniature pair, for tests
"""
import argparse
import ast
import hashlib
import json
import math
import random
import sys
import sysconfig
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIALS = ["<unk>", "<s>", "</s>"]
HELD_OUT_PERCENT = 5
TRAIN_LEN = 256
MAX_PROMPT_TOKENS = 96

SIZES = {
    # d, layers, heads, ffn
    "target": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=688),
    "draft": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=2, intermediate_size=352),
    "tiny-target": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128),
    "tiny-draft": dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=1, intermediate_size=64),
}


def stdlib_files(max_files=None):
    """(relative path, source) of the stdlib's .py files, test directories excluded, sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        parts = set(rel.split("/")[:-1])
        if "site-packages" in parts or any(p in ("test", "tests", "idle_test") for p in parts):
            continue
        try:
            out.append((rel, path.read_text(encoding="utf-8")))
        except (UnicodeDecodeError, OSError):
            continue
    return out[:max_files] if max_files else out


def is_held_out(rel_path):
    return int(hashlib.sha1(rel_path.encode()).hexdigest(), 16) % 100 < HELD_OUT_PERCENT


def train_tokenizer(texts, vocab_size):
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def encode_stream(tokenizer, texts):
    ids = []
    for text in texts:  # tokenizer adds <s>; </s> ends each file so the models learn to stop
        ids.extend(tokenizer(text)["input_ids"] + [tokenizer.eos_token_id])
    return torch.tensor(ids, dtype=torch.long)


def make_model(size, tokenizer, seed):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=1024, tie_word_embeddings=True,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                      num_key_value_heads=SIZES[size]["num_attention_heads"], **SIZES[size])
    return LlamaForCausalLM(cfg)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def batches(stream, batch_size, seq_len, gen):
    while True:
        starts = torch.randint(0, len(stream) - seq_len - 1, (batch_size,), generator=gen)
        yield torch.stack([stream[s:s + seq_len + 1] for s in starts.tolist()])


def train(model, stream, minutes, lr, seed, batch_size=16, seq_len=TRAIN_LEN, teacher=None, max_steps=None):
    """Train within a time budget (and at most max_steps); with a teacher, minimise KL(teacher || model)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    budget, t0, step, warmup = minutes * 60, time.time(), 0, 30
    model.train()
    for batch in batches(stream, batch_size, seq_len, gen):
        elapsed = (time.time() - t0) / budget
        progress = max(elapsed, step / max_steps if max_steps else 0.0)
        if progress >= 1:
            break
        # lr follows the fraction of the budget (time or steps) spent, so any budget gets a full cosine
        scale = min(1.0, (step + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        x, y = batch[:, :-1], batch[:, 1:]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x).logits.float()
            if teacher is None:
                loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
            else:
                with torch.no_grad():
                    t_logp = F.log_softmax(teacher(x).logits.float(), -1)
                loss = F.kl_div(F.log_softmax(logits, -1).reshape(-1, logits.size(-1)),
                                t_logp.reshape(-1, logits.size(-1)), log_target=True, reduction="batchmean")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 100 == 0:
            print(f"  step {step} loss {loss.item():.3f} ({time.time() - t0:.0f}s)", flush=True)
    model.eval()
    return {"steps": step, "tokens": step * batch_size * seq_len, "seconds": round(time.time() - t0, 1)}


@torch.no_grad()
def held_out_loss(model, stream, seq_len=TRAIN_LEN, max_windows=200):
    """Mean next-token cross-entropy over consecutive held-out windows (fp32)."""
    losses = []
    for start in range(0, len(stream) - seq_len - 1, seq_len)[:max_windows]:
        w = stream[start:start + seq_len + 1].unsqueeze(0)
        logits = model(w[:, :-1]).logits
        losses.append(F.cross_entropy(logits[0], w[0, 1:]).item())
    return sum(losses) / len(losses)


def demo_prompts(held_out, tokenizer, n_code=80, n_cont=40, seed=0):
    """Spec-Bench-style questions from held-out files.

    code: a def/class header with its docstring; code-cont: a function cut a few body lines in.
    """
    code, cont = [], []
    fits = lambda text: 8 <= len(tokenizer(text)["input_ids"]) <= MAX_PROMPT_TOKENS
    for rel, src in held_out:
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        lines = src.splitlines(keepends=True)
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or not node.body:
                continue
            first = node.body[0]
            start = (node.decorator_list[0].lineno if node.decorator_list else node.lineno) - 1
            has_doc = isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant) \
                and isinstance(first.value.value, str)
            if has_doc:
                text = "".join(lines[start:first.end_lineno])
                if fits(text):
                    code.append({"category": "code", "turns": [text], "source": rel})
            body = node.body[1:] if has_doc else node.body
            if isinstance(node, ast.ClassDef) or len(body) < 4:
                continue
            cut = body[len(body) // 3].lineno - 1  # cut at a statement boundary, a third into the body
            text = "".join(lines[max(start, cut - 12):cut])
            if fits(text) and text.strip():
                cont.append({"category": "code-cont", "turns": [text], "source": rel})
    rng = random.Random(seed)
    rng.shuffle(code)
    rng.shuffle(cont)
    questions = code[:n_code] + cont[:n_cont]
    for i, q in enumerate(questions):
        q["question_id"] = i + 1
    return [{"question_id": q["question_id"], "category": q["category"], "turns": q["turns"],
             "source": q["source"]} for q in questions]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="data/models", help="where the three models go")
    ap.add_argument("--prompts-out", default="data/demo/questions.jsonl")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--target-minutes", type=float, default=30)
    ap.add_argument("--draft-minutes", type=float, default=15, help="distillation from the target")
    ap.add_argument("--target-steps", type=int, default=1600, help="stop the target after this many steps")
    ap.add_argument("--draft-steps", type=int, default=900, help="stop the draft after this many steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="miniature models and corpus, for tests")
    ap.add_argument("--max-files", type=int, default=None)
    ap.add_argument("--gguf-dtype", default="f16", choices=["f32", "f16", "q8_0"])
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    files = stdlib_files(args.max_files)
    train_files = [(r, s) for r, s in files if not is_held_out(r)]
    held_files = [(r, s) for r, s in files if is_held_out(r)]
    if not train_files or not held_files:
        sys.exit("error: the corpus split left no train or no held-out files; raise --max-files")
    print(f"corpus: {len(train_files)} train files, {len(held_files)} held out", flush=True)

    tokenizer = train_tokenizer([s for _, s in train_files], args.vocab_size)
    train_stream = encode_stream(tokenizer, [s for _, s in train_files])
    held_stream = encode_stream(tokenizer, [s for _, s in held_files])
    prefix = "tiny-" if args.tiny else ""

    print(f"target: {args.target_minutes} min", flush=True)
    target = make_model(prefix + "target", tokenizer, args.seed)
    t_info = train(target, train_stream, args.target_minutes, lr=1.5e-3, seed=args.seed,
                   max_steps=args.target_steps)
    print(f"draft (distilled): {args.draft_minutes} min", flush=True)
    draft = make_model(prefix + "draft", tokenizer, args.seed + 1)
    for p in target.parameters():
        p.requires_grad_(False)
    d_info = train(draft, train_stream, args.draft_minutes, lr=3e-3, seed=args.seed + 1, teacher=target,
                   max_steps=args.draft_steps)

    info = {
        "python": sys.version.split()[0], "seed": args.seed,
        "corpus": {"train_files": len(train_files), "held_out_files": len(held_files),
                   "train_tokens": len(train_stream), "held_out_tokens": len(held_stream)},
        "vocab_size": len(tokenizer), "gguf_dtype": args.gguf_dtype,
        "target": {"params": n_params(target), "config": SIZES[prefix + "target"], **t_info,
                   "held_out_loss": round(held_out_loss(target, held_stream), 4)},
        "draft": {"params": n_params(draft), "config": SIZES[prefix + "draft"], "distilled": True, **d_info,
                  "held_out_loss": round(held_out_loss(draft, held_stream), 4)},
    }
    for name, model in (("demo-target", target), ("demo-draft", draft)):
        model.save_pretrained(out / name)
        tokenizer.save_pretrained(out / name)
    from src.tools.convert_to_gguf import convert
    convert(out / "demo-draft", out / "demo-draft.gguf", args.gguf_dtype)
    (out / "train_info.json").write_text(json.dumps(info, indent=1) + "\n")

    prompts = demo_prompts(held_files, tokenizer, seed=args.seed)
    Path(args.prompts_out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.prompts_out, "w") as f:
        for q in prompts:
            f.write(json.dumps(q) + "\n")
    print(json.dumps(info, indent=1))
    print(f"wrote {out}/demo-target, demo-draft, demo-draft.gguf and {len(prompts)} prompts to {args.prompts_out}")


if __name__ == "__main__":
    main()
