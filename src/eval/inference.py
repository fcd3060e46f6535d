"""Spec-Bench-style harness: answer every question of a bench with one decoding method.

    python -m src.eval.inference --method ar --target demo-target --bench demo --answer-file results/x.jsonl
    python -m src.eval.inference --method duodec --help      # the common flags and that method's own

`run_eval(runs, questions, ...)` knows nothing of the methods: each run's
`forward(prompt_ids, max_new_tokens, sampling, gen)` returns a `Generation`. With several runs (as
`src.eval.compare` makes) every question is answered by each run in turn, the order rotating per
question. Each answer is one appended, flushed line; rerunning with the same answer file skips the
questions already answered.
"""
import argparse
import os
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import shortuuid
import torch
from tqdm import tqdm

from src.argtypes import Parser, non_negative, positive, ranged, threads
from src.eval import answers
from src.eval.prompts import PromptError, build_prompt, check_prompt
from src.eval.questions import BENCHES, QuestionFileError, questions_for
from src.model import METHODS, NotImplementedMethod, add_method_args, check_method_args, load_draft, load_method, \
    load_target
from src.model.base import Sampling
from src.utils import ModelNotFound


@dataclass
class Run:
    """One method's answers: `name` is recorded as the answers' model_id."""
    name: str
    forward: object
    answer_file: Path
    settings: dict = field(default_factory=dict)


def question_seed(seed, question_id):
    """The sampling seed of one question: the same in every process and entry point (unlike hash())."""
    return zlib.crc32(f"{seed}:{question_id}".encode())


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


def run_eval(runs, questions, tokenizer, *, template="raw", max_new_tokens=128, sampling=Sampling(), seed=0,
             max_length=None, device=None, warmup=1, deadline=None):
    """Answer, with every run, the questions its answer file lacks; the runs take turns question by
    question, so a noisy machine's drifts hit them alike. No question starts after `deadline`
    (time.monotonic()). Returns the number of answers written."""
    done = {run.name: {a["question_id"] for a in answers.repair(run.answer_file)} for run in runs}
    todo = [(i, q) for i, q in enumerate(questions) if any(q["question_id"] not in done[r.name] for r in runs)]
    if not todo:
        return 0
    gen_device = device if device is not None else torch.device("cpu")
    ask = lambda run, q, n, gen: answer_question(run.forward, q, tokenizer, template, n, sampling, gen,
                                                 max_length, device)
    for q in questions[:warmup]:  # warm-up: allocations, kernels, caches; not recorded
        for run in runs:
            ask(run, q, min(max_new_tokens, 32), torch.Generator(gen_device).manual_seed(seed))
    written = 0
    for i, q in tqdm(todo, desc=", ".join(r.name for r in runs), unit="q"):
        if deadline is not None and time.monotonic() > deadline:
            print(f"time budget spent: stopped before question {q['question_id']}; what was answered is kept",
                  file=sys.stderr)
            break
        for run in runs[i % len(runs):] + runs[:i % len(runs)]:
            if q["question_id"] in done[run.name]:
                continue
            gen = torch.Generator(gen_device).manual_seed(question_seed(seed, q["question_id"]))
            choice = ask(run, q, max_new_tokens, gen)
            choice["settings"] = run.settings
            answers.append(run.answer_file, answer_record(q, choice, run.name))
            written += 1
    return written


def run_settings(args, method, draft_name, target, draft, forward, template):
    """What an answer records of how it was made: the common flags, then the method's own settings."""
    return {"method": method, "target": str(args.target), "draft": draft_name,
            "draft_repack": getattr(draft, "repack", None), "draft_threads": getattr(draft, "threads", None),
            "cpu_affinity": sorted(os.sched_getaffinity(0)), "temperature": args.temperature, "top_k": args.top_k,
            "top_p": args.top_p, "max_new_tokens": args.max_new_tokens, "template": template, "seed": args.seed,
            "device": str(target.device), **getattr(forward, "settings", {})}


def shard(questions, num_shards, index):
    """Every num_shards-th question from `index`: the shards partition the questions."""
    if not 0 <= index < num_shards:
        raise ValueError(f"--shard-index must be in 0..{num_shards - 1}")
    return questions[index::num_shards]


def shard_file(path, index, num_shards):
    p = Path(path)
    return str(p.with_name(f"{p.stem}.shard{index}of{num_shards}{p.suffix}"))


def add_common_args(ap):
    """The flags of every entry point that decodes: target, sampling, threads, devices."""
    ap.add_argument("--target", default="demo-target", help="registry name (src/utils.py) or HF directory")
    ap.add_argument("--max-new-tokens", type=positive, default=128)
    ap.add_argument("--temperature", type=ranged(float, 0), default=0.0, help="0: greedy")
    ap.add_argument("--top-k", type=non_negative, default=0, help="0: off")
    ap.add_argument("--top-p", type=ranged(float, 0, 1, lo_open=True), default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warmup", type=non_negative, default=1, help="questions run untimed first")
    ap.add_argument("--device", default=None, help="target device (default: cuda if present, else cpu)")
    ap.add_argument("--device-map", default=None, help="e.g. 'auto': spread the target over all GPUs (accelerate)")
    ap.add_argument("--target-threads", type=threads("--target-threads"), default=None,
                    help="torch threads for a CPU target")
    ap.add_argument("--draft-threads", type=threads("--draft-threads"), default=None,
                    help="llama.cpp threads for a GGUF draft (default: 1 beside a CPU target; beside a GPU "
                         "target all cores but two, which the target's kernel-launching thread needs)")
    ap.add_argument("--draft-repack", choices=["auto", "on", "off"], default="auto",
                    help="llama.cpp's weight-repacking buffer types for a quantized GGUF draft (auto: on, except "
                         "where the CPU offers AMX, whose kernels crash llama.cpp 0.3.36 on quantized drafts)")


def parser(method="ar"):
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="ar", choices=list(METHODS), help="the decoding method (its flags: "
                    "--method NAME --help)")
    ap.add_argument("--draft", default=None, help="registry name or path: HF directory or GGUF file")
    ap.add_argument("--bench", choices=sorted(BENCHES), default=None)
    ap.add_argument("--question-file", default=None, help="Spec-Bench or HumanEval JSONL (filtered by --bench)")
    ap.add_argument("--answer-file", required=True)
    ap.add_argument("--model-id", default=None, help="name recorded in the answers (default: method-target)")
    ap.add_argument("--template", default=None, help="fschat template name or 'raw' (default: from the registry)")
    ap.add_argument("--limit", type=positive, default=None, help="answer only the first N questions")
    ap.add_argument("--num-shards", type=positive, default=1, help="split the questions over N processes")
    ap.add_argument("--shard-index", type=non_negative, default=0, help="this process's shard (0..N-1); its "
                    "answers go to ANSWER_FILE with .shardIofN before the extension")
    add_common_args(ap)
    add_method_args(load_method(method), ap, method)
    return ap


def parse_args(argv=None):
    """Two passes: --method first, then the common flags and that method's own."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--method", default="ar")
    method = pre.parse_known_args(argv)[0].method
    if method not in METHODS:
        Parser().error(f"--method must be one of {', '.join(METHODS)}, not {method!r}")
    try:
        ap = parser(method)
    except NotImplementedMethod as e:
        Parser().error(str(e))
    args = ap.parse_args(argv)
    if args.bench is None and args.question_file is None:
        ap.error("give --bench NAME or --question-file PATH")
    if args.shard_index >= args.num_shards:
        ap.error(f"--shard-index must be below --num-shards ({args.num_shards})")
    module = load_method(method)
    check_method_args(module, args, ap)
    return args, module


def main(argv=None):
    args, method = parse_args(argv)
    try:
        questions = shard(questions_for(args.bench, args.question_file)[:args.limit], args.num_shards,
                          args.shard_index)
        target = load_target(args.target, args.device, args.target_threads, args.device_map)
        draft = load_draft(method, args.method, args.draft, target, args.draft_threads, args.draft_repack)
    except (NotImplementedMethod, QuestionFileError, ModelNotFound, ValueError, RuntimeError, OSError) as e:
        sys.exit(f"error: {e}")
    template = args.template or target.template
    forward = method.make(args, target, draft)
    settings = run_settings(args, args.method, args.draft, target, draft, forward, template)
    model_id = args.model_id or f"{args.method}-{target.path.name}"
    if args.num_shards > 1:
        args.answer_file = shard_file(args.answer_file, args.shard_index, args.num_shards)
    try:
        n = run_eval([Run(model_id, forward, Path(args.answer_file), settings)], questions, target.tokenizer,
                     template=template, max_new_tokens=args.max_new_tokens,
                     sampling=Sampling(args.temperature, args.top_k, args.top_p), seed=args.seed,
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
