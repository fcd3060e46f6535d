"""Spec-Bench-style harness: answer every question of a bench with one decoding method.

    python -m src.eval.inference --method ar --target demo-target --bench demo --answer-file results/x.jsonl
    python -m src.eval.inference --method duodec --help      # the common flags and that method's own

`run_eval(runs, questions, ...)` knows nothing of the methods: each run's
`forward(prompt_ids, max_new_tokens, sampling, gen)` returns a `Generation`. With several runs (as
`src.eval.compare` makes) every question is answered by each run in turn, the order shuffled per
question. Each answer is one appended, flushed line; rerunning with the same answer file skips the
questions already answered.
"""
import argparse
import os
import random
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
from src.eval.cli import run_cli
from src.eval.prompts import PromptError, check_prompt, prompt_ids
from src.eval.questions import BENCHES, questions_for
from src.model import METHODS, NotImplementedMethod, add_method_args, check_draft, check_method_args, load_draft, \
    load_method, load_target, make_method, method_flags, plan_cores
from src.model.base import REGIMES
from src.model.base import Sampling


@dataclass
class Run:
    """One method's answers: `name` is recorded as the answers' model_id. `config` is what a resume must
    match (method, models, sampling, the method's flags); `settings` adds what was measured."""
    name: str
    forward: object
    answer_file: Path
    settings: dict = field(default_factory=dict)
    config: dict = None


@dataclass(kw_only=True)
class EvalConfig:
    """How every run answers: the prompt template, new tokens per turn, sampling and its seed, the target's
    context and device, the untimed warm-up questions, a deadline (time.monotonic()) after which no question
    starts, and how a resume treats an answer file (force_resume, repair)."""
    template: str = "raw"
    max_new_tokens: int = 128
    sampling: Sampling = field(default_factory=Sampling)
    seed: int = 0
    max_length: int = None
    device: object = None
    warmup: int = 1
    deadline: float = None
    force_resume: bool = False
    repair: bool = False


def question_seed(seed, question_id):
    """The sampling seed of one question: the same in every process and entry point (unlike hash())."""
    return zlib.crc32(f"{seed}:{question_id}".encode())


def answer_question(forward, question, tokenizer, cfg, gen, max_new_tokens):
    """Answer every turn of one question; returns the Spec-Bench `choices[0]` dict."""
    template, sampling, max_length, device = cfg.template, cfg.sampling, cfg.max_length, cfg.device
    turns, outputs = question["turns"], []
    choice = {"index": 0, "turns": [], "new_tokens": [], "wall_time": [], "accept_lengths": [],
              "decoding_steps": [], "token_ids": [], "ttft": [], "stop": [], "stats": []}
    for i in range(len(turns)):
        ids = prompt_ids(tokenizer, template, turns[:i + 1], outputs)
        check_prompt(ids, turns[i], max_new_tokens, max_length, f"question {question['question_id']} turn {i + 1}")
        sync(device)
        t0 = time.perf_counter()
        out = forward(ids, max_new_tokens, sampling, gen)
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
    """An answer line as Spec-Bench writes it: an MT-bench question under its own category (writing, ...), which
    Spec-Bench's speed.py selects MT-bench by; answers.load reads those as mt_bench."""
    return {"question_id": question["question_id"], "category": question.get("subcategory", question["category"]),
            "answer_id": shortuuid.uuid(), "model_id": model_id, "choices": [choice], "tstamp": time.time()}


def sync(device):
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; `written` answers were kept."""

    def __init__(self, written):
        super().__init__(f"interrupted after {written} answers; rerun the same command to resume")
        self.written = written


class RunError(RuntimeError):
    """A method failed on one question (a dead draft worker, say); the answers before it are kept."""


def check_questions(questions, tokenizer, template, max_new_tokens, max_length):
    """Before any work: every question's first turn, and all its turns without the answers between them,
    must leave room for max_new_tokens in the target's context."""
    bad = []
    for q in questions:
        for n_turns in sorted({1, len(q["turns"])}):
            try:
                ids = prompt_ids(tokenizer, template, q["turns"][:n_turns], [""] * (n_turns - 1))
                check_prompt(ids, q["turns"][n_turns - 1], max_new_tokens, max_length,
                             f"question {q['question_id']} turn {n_turns}")
            except PromptError as e:
                bad.append(str(e))
                break
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise PromptError(f"{bad[0]}{more}: lower --max-new-tokens, or leave such questions out of the file")


def run_eval(runs, questions, tokenizer, cfg=None, **settings):
    """Answer, with every run, the questions its answer file lacks; the runs take turns question by
    question, so a noisy machine's drifts hit them alike. `cfg` is an EvalConfig (or its fields as keywords).
    Returns the number of answers written.

    Each answer file is locked for the run and must hold answers of the run's own configuration
    (unless force_resume). A later turn that outgrows the context is recorded as skipped, so that a
    rerun completes."""
    cfg = cfg or EvalConfig(**settings)
    check_questions(questions, tokenizer, cfg.template, cfg.max_new_tokens, cfg.max_length)
    with answers.locked([run.answer_file for run in runs]):
        done = {}
        for run in runs:
            existing = answers.repair(run.answer_file, move_bad=cfg.repair)
            answers.check_config(run.answer_file, existing, run.config, cfg.force_resume)
            done[run.name] = {a["question_id"] for a in existing}
        written = 0
        try:
            for _ in answer_all(runs, questions, done, tokenizer, cfg):
                written += 1
        except KeyboardInterrupt:
            # counted from the files: Ctrl-C may land between an answer's write and its count
            held = sum(len(answers.repair(run.answer_file)) for run in runs)
            raise Interrupted(held - sum(len(d) for d in done.values())) from None
    return written


def turn_order(runs, seed, question_id):
    """The runs' order for one question: shuffled by the question's seed. A rotation would keep each run
    behind the same neighbour at every question, and what a run leaves behind (a busy core, a cold cache)
    would then always tax the same other run."""
    order = list(runs)
    random.Random(question_seed(seed, question_id)).shuffle(order)
    return order


def answer_all(runs, questions, done, tokenizer, cfg):
    """Yields once per answer written."""
    todo = [(i, q) for i, q in enumerate(questions) if any(q["question_id"] not in done[r.name] for r in runs)]
    if not todo:
        return
    seed = cfg.seed
    gen_device = cfg.device if cfg.device is not None else torch.device("cpu")
    ask = lambda run, q, n, gen: answer_question(run.forward, q, tokenizer, cfg, gen, n)
    for q in questions[:cfg.warmup]:  # warm-up: allocations, kernels, caches; not recorded
        for run in runs:
            ask(run, q, min(cfg.max_new_tokens, 32), torch.Generator(gen_device).manual_seed(seed))
    for i, q in tqdm(todo, desc=", ".join(r.name for r in runs), unit="q"):
        if cfg.deadline is not None and time.monotonic() > cfg.deadline:
            print(f"time budget spent: stopped before question {q['question_id']}; what was answered is kept",
                  file=sys.stderr)
            break
        for run in turn_order(runs, seed, q["question_id"]):
            if q["question_id"] in done[run.name]:
                continue
            gen = torch.Generator(gen_device).manual_seed(question_seed(seed, q["question_id"]))
            try:
                choice = ask(run, q, cfg.max_new_tokens, gen)
                choice["settings"] = run.settings
                record = answer_record(q, choice, run.name)
            except PromptError as e:
                record = {**answer_record(q, None, run.name), "choices": [], "skipped": str(e)}
            except RuntimeError as e:
                raise RunError(f"{run.name}, question {q['question_id']}: {e}") from e
            record["config"] = run.config
            answers.append(run.answer_file, record)
            yield


def answer_config(args, method, flags, draft_name, template, **extra):
    """What a resume must match (one builder for every entry point): the method and its own flags, the models,
    the questions, the template, sampling and the target's dtype."""
    return {**extra, "method": method, "target": args.target, "draft": draft_name, "bench": args.bench,
            "question_file": args.question_file, "template": template,
            **{k: getattr(args, k) for k in ("max_new_tokens", "temperature", "top_k", "top_p", "seed", "dtype")},
            "cores": args.regime,
            "method_flags": flags}


def run_settings(args, method, draft_name, target, draft, forward, template, cores):
    """What an answer records of how it was made: the common flags, the regime's cores, then the method's own
    settings. The threads each side ran on are in every turn's stats."""
    target_threads, draft_threads = cores.sides()
    return {"method": method, "target": str(args.target), "draft": draft_name,
            "draft_repack": getattr(draft, "repack", None), "cores": cores.as_dict(),
            "target_threads": target_threads, "draft_threads": draft_threads if draft is not None else None,
            "cpu_affinity": sorted(os.sched_getaffinity(0)), "temperature": args.temperature, "top_k": args.top_k,
            "top_p": args.top_p, "max_new_tokens": args.max_new_tokens, "template": template, "seed": args.seed,
            "device": str(target.device), "dtype": str(target.dtype).removeprefix("torch."), **getattr(forward, "settings", {})}


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
    ap.add_argument("--dtype", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                    help="the target's weights (and an HF draft's): auto is bf16 on a GPU, fp32 on the CPU; bf16 "
                         "pays on CPUs with AMX or AVX-512-BF16, where verifying 8 tokens costs about one")
    ap.add_argument("--cores", dest="regime", choices=REGIMES, default="split",
                    help="split (default; the paper's hardware on one CPU): the target owns --target-threads cores, "
                         "the draft owns --draft-threads others, and no method borrows the other side's; shared (a "
                         "CPU-only machine): every method may use every core, each side every core in its turn")
    ap.add_argument("--target-threads", type=threads("--target-threads"), default=None,
                    help="torch threads for a CPU target (default: the cores the draft does not own)")
    ap.add_argument("--draft-threads", type=threads("--draft-threads"), default=None,
                    help="llama.cpp threads for a GGUF draft (default: 1 beside a CPU target; beside a GPU "
                         "target all cores but two, which the target's kernel-launching thread needs)")
    ap.add_argument("--force-resume", action="store_true", help="resume an answer file made with other settings")
    ap.add_argument("--repair", action="store_true", help="move malformed lines of an answer file to FILE.bad")
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


def chosen_method(argv):
    """The first of two passes over the flags: --method alone, so its own flags can be added for the second."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--method", default="ar")
    method = pre.parse_known_args(argv)[0].method
    if method not in METHODS:
        Parser().error(f"--method must be one of {', '.join(METHODS)}, not {method!r}")
    return method


def parse_args(argv=None):
    """Two passes: --method first, then the common flags and that method's own."""
    method = chosen_method(argv)
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
    problem = check_device(args.device) or check_draft(module, method, args.draft) or check_answer_path(args.answer_file)
    if problem:
        ap.error(problem)
    return args, module


def check_device(device):
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except RuntimeError:
        return f"--device must be cpu, cuda or cuda:N, not {device!r}"
    if dev.type == "cuda" and not torch.cuda.is_available():
        return f"--device {device}: no CUDA device is visible here"
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        return f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here"
    return None


def check_answer_path(path):
    """Before any model loads: the answer file's folder exists or can be made, and both can be written."""
    path = Path(path)
    for parent in [path.parent, *path.parent.parents]:
        if parent.exists():
            if not parent.is_dir():
                return f"--answer-file {path}: {parent} is a file, not a folder"
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        return f"--answer-file {path}: cannot create its folder ({e.strerror})"
    if path.is_dir():
        return f"--answer-file {path} is a folder"
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return f"--answer-file {path} cannot be written"
    return None


def main(argv=None):
    args, method = parse_args(argv)
    questions = shard(questions_for(args.bench, args.question_file)[:args.limit], args.num_shards, args.shard_index)
    if args.num_shards > 1:
        args.answer_file = shard_file(args.answer_file, args.shard_index, args.num_shards)
    with answers.locked([args.answer_file]):  # a second writer is refused before any model loads
        run_inference(args, method, questions)


def build(args, method):
    """The target, the regime's cores, the draft and the method the flags ask for: (target, cores, draft, forward)."""
    target = load_target(args.target, args.device, args.target_threads, args.device_map, args.dtype)
    gguf = args.draft if args.draft and str(args.draft).endswith("gguf") else None  # a file or a registry name
    cores = plan_cores(args.regime, target, args.target_threads, args.draft_threads, gguf, args.draft_repack)
    target.set_threads(cores.target)
    draft = load_draft(method, args.method, args.draft, target, cores.draft, args.draft_repack)
    return target, cores, draft, make_method(method, args, target, draft, cores)


def run_inference(args, method, questions):
    target, cores, draft, forward = build(args, method)
    template = args.template or target.template
    model_id = args.model_id or f"{args.method}-{target.path.name}"
    config = answer_config(args, args.method, method_flags(method, args), args.draft, template, model_id=model_id)
    run = Run(model_id, forward, Path(args.answer_file), run_settings(args, args.method, args.draft, target, draft,
                                                                      forward, template, cores), config)
    try:
        n = run_eval([run], questions, target.tokenizer, template=template, max_new_tokens=args.max_new_tokens,
                     sampling=Sampling(args.temperature, args.top_k, args.top_p), seed=args.seed,
                     max_length=target.max_length, device=target.device, warmup=args.warmup,
                     force_resume=args.force_resume, repair=args.repair)
    finally:
        close_run(forward, draft)
    print(f"{n} answers written to {args.answer_file}")


def close_run(forward, draft):
    """Stop the method's workers, then free a llama.cpp draft now rather than in the interpreter's
    teardown, where freeing it beside other libraries' threads has aborted the process."""
    if hasattr(forward, "close"):
        forward.close()
    if hasattr(draft, "close"):
        draft.close()


if __name__ == "__main__":
    run_cli(main)
