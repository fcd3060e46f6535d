"""Spec-Bench-style harness: answer every question of a bench with one decoding method.

    python -m src.eval.inference --method ar --target demo-target --bench demo --answer-file results/x.jsonl

`run_eval(forward, ...)` knows nothing of the method: `forward(prompt_ids, max_new_tokens, sampling, gen)`
returns a `Generation`. Each answer is one appended, flushed line; rerunning with the same answer file
skips the questions already answered.
"""
import argparse
import sys
import time
from pathlib import Path

import shortuuid
import torch
from tqdm import tqdm

from src.eval import answers
from src.eval.prompts import PromptError, build_prompt, check_prompt
from src.eval.questions import BENCHES, QuestionFileError, questions_for
from src.model import METHODS, NotImplementedMethod, load_method, load_models
from src.model.base import Sampling
from src.utils import ModelNotFound, resolve


def answer_question(forward, question, tokenizer, template, max_new_tokens, sampling, gen, max_length, device):
    """Answer every turn of one question; returns the Spec-Bench `choices[0]` dict."""
    turns, outputs = question["turns"], []
    choice = {"index": 0, "turns": [], "new_tokens": [], "wall_time": [], "accept_lengths": [],
              "decoding_steps": [], "token_ids": [], "ttft": [], "stop": [], "stats": []}
    for i in range(len(turns)):
        prompt = build_prompt(template, turns[:i + 1], outputs)
        prompt_ids = tokenizer(prompt)["input_ids"]
        check_prompt(prompt_ids, turns[i], max_new_tokens, max_length, f"question {question['question_id']} "
                     f"turn {i + 1}")
        sync(device)
        t0 = time.perf_counter()
        out = forward(prompt_ids, max_new_tokens, sampling, gen)
        sync(device)
        wall = time.perf_counter() - t0
        text = tokenizer.decode(out.token_ids, skip_special_tokens=True)
        outputs.append(text)
        choice["turns"].append(text)
        choice["new_tokens"].append(len(out.token_ids))
        choice["wall_time"].append(wall)
        choice["accept_lengths"].extend(out.accept_lengths)
        choice["decoding_steps"].append(out.decoding_steps)
        choice["token_ids"].append(out.token_ids)
        choice["ttft"].append(out.ttft)
        choice["stop"].append(out.stop)
        choice["stats"].append(out.stats)
    return choice


def answer_record(question, choice, model_id):
    return {"question_id": question["question_id"], "category": question["category"],
            "answer_id": shortuuid.uuid(), "model_id": model_id, "choices": [choice], "tstamp": time.time()}


def sync(device):
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def run_eval(forward, questions, tokenizer, answer_file, model_id, *, template="raw", max_new_tokens=128,
             sampling=Sampling(), seed=0, settings=None, max_length=None, device=None, warmup=1):
    """Answer the questions not yet in `answer_file`. Returns the number answered now."""
    done = {a["question_id"] for a in answers.repair(answer_file)}
    todo = [q for q in questions if q["question_id"] not in done]
    if not todo:
        return 0
    gen_device = device if device is not None else torch.device("cpu")
    for q in questions[:warmup]:  # warm-up: allocations, kernels, caches; not recorded
        answer_question(forward, q, tokenizer, template, min(max_new_tokens, 32), sampling,
                        torch.Generator(gen_device).manual_seed(seed), max_length, device)
    for q in tqdm(todo, desc=model_id, unit="q"):
        gen = torch.Generator(gen_device).manual_seed(seed * 1_000_003 + hash(str(q["question_id"])) % 1_000_003)
        choice = answer_question(forward, q, tokenizer, template, max_new_tokens, sampling, gen, max_length, device)
        choice["settings"] = settings or {}
        answers.append(answer_file, answer_record(q, choice, model_id))
    return len(todo)


def shard(questions, num_shards, index):
    """Every num_shards-th question from `index`: the shards partition the questions."""
    if not 0 <= index < num_shards:
        raise ValueError(f"--shard-index must be in 0..{num_shards - 1}")
    return questions[index::num_shards]


def shard_file(path, index, num_shards):
    p = Path(path)
    return str(p.with_name(f"{p.stem}.shard{index}of{num_shards}{p.suffix}"))


def parser():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="ar", help=f"one of {', '.join(METHODS)}")
    ap.add_argument("--target", default="demo-target", help="registry name (src/utils.py) or HF directory")
    ap.add_argument("--draft", default=None, help="registry name or path: HF directory or GGUF file")
    ap.add_argument("--bench", choices=sorted(BENCHES), default=None)
    ap.add_argument("--question-file", default=None, help="Spec-Bench or HumanEval JSONL (filtered by --bench)")
    ap.add_argument("--answer-file", required=True)
    ap.add_argument("--model-id", default=None, help="name recorded in the answers (default: method-target)")
    ap.add_argument("--template", default=None, help="fschat template name or 'raw' (default: from the registry)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--limit", type=int, default=None, help="answer only the first N questions")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num-shards", type=int, default=1, help="split the questions over N processes")
    ap.add_argument("--shard-index", type=int, default=0, help="this process's shard (0..N-1); its answers go "
                    "to ANSWER_FILE with .shardIofN before the extension")
    ap.add_argument("--warmup", type=int, default=1, help="questions run untimed first")
    ap.add_argument("--device", default=None, help="target device (default: cuda if present, else cpu)")
    ap.add_argument("--device-map", default=None, help="e.g. 'auto': spread the target over all GPUs (accelerate)")
    ap.add_argument("--target-threads", type=int, default=None, help="torch threads for a CPU target")
    ap.add_argument("--draft-threads", type=int, default=1, help="llama.cpp threads for a GGUF draft")
    for name in METHODS:
        try:
            load_method(name).add_args(ap)
        except (NotImplementedMethod, AttributeError):
            pass
    return ap


def main(argv=None):
    args = parser().parse_args(argv)
    if args.bench is None and args.question_file is None:
        sys.exit("error: give --bench NAME or --question-file PATH")
    try:
        method = load_method(args.method)
        questions = shard(questions_for(args.bench, args.question_file)[:args.limit], args.num_shards,
                          args.shard_index)
        target_path, target_entry = resolve(args.target, "--target")
        models = load_models(method, args, target_path)
    except (NotImplementedMethod, QuestionFileError, ModelNotFound, ValueError, RuntimeError, OSError) as e:
        sys.exit(f"error: {e}")
    target = models["target"]
    template = args.template or target_entry.get("template", "raw")
    sampling = Sampling(args.temperature, args.top_k, args.top_p)
    forward = method.make(args, **models)
    settings = {"method": args.method, "target": str(args.target), "draft": args.draft,
                "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
                "max_new_tokens": args.max_new_tokens, "template": template, "seed": args.seed,
                "device": str(target.device), **getattr(forward, "settings", {})}
    model_id = args.model_id or f"{args.method}-{target_path.name}"
    if args.num_shards > 1:
        args.answer_file = shard_file(args.answer_file, args.shard_index, args.num_shards)
    try:
        n = run_eval(forward, questions, target.tokenizer, args.answer_file, model_id, template=template,
                     max_new_tokens=args.max_new_tokens, sampling=sampling, seed=args.seed, settings=settings,
                     max_length=target.max_length, device=target.device, warmup=args.warmup)
    except PromptError as e:
        sys.exit(f"error: {e} (answers so far are kept in {args.answer_file}; a rerun resumes)")
    finally:
        close = getattr(forward, "close", None)
        if close:
            close()
    print(f"{n} answers written to {args.answer_file}")


if __name__ == "__main__":
    main()
