"""Run several methods on the same questions, interleaved, and print the comparison with AR.

    python -m src.eval.compare --bench demo --methods ar,sps,pld,rest,duodec --out results/demo-cpu

Each question is answered by every method in turn (the order rotates per question), so slow drifts
of a noisy machine hit all methods alike. Each method writes its own answer file in OUT, through the
same code as `src.eval.inference`, and a rerun resumes. The table is `src.eval.speed`'s, per method.
"""
import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from src.eval import answers
from src.eval.inference import answer_question, answer_record, parser as inference_parser
from src.eval.questions import questions_for
from src.eval.speed import compare, table
from src.model import load_method, load_models
from src.model.base import Sampling
from src.utils import resolve

# name -> the inference flags that make it (on top of the common ones)
VARIANTS = {
    "ar": ["--method", "ar"],
    "sps": ["--method", "sps", "--draft", "demo-draft"],
    "sps-gguf": ["--method", "sps", "--draft", "demo-draft-gguf"],
    "pld": ["--method", "pld"],
    "rest": ["--method", "rest"],
    "duodec": ["--method", "duodec", "--draft", "demo-draft-gguf"],
    # ablations
    "duodec-k1": ["--method", "duodec", "--draft", "demo-draft-gguf", "--no-multiseq"],
    "duodec-gamma8": ["--method", "duodec", "--draft", "demo-draft-gguf", "--gamma", "8"],
    "duodec-full": ["--method", "duodec", "--draft", "demo-draft-gguf", "--seq-budget", "full"],
    "duodec-process": ["--method", "duodec", "--draft", "demo-draft-gguf", "--worker", "process"],
    "duodec-time": ["--method", "duodec", "--draft", "demo-draft-gguf", "--gamma-rule", "time"],
    "duodec-preverify": ["--method", "duodec", "--draft", "demo-draft-gguf", "--catch-up", "0"],
    "duodec-tree": ["--method", "duodec", "--draft", "demo-draft-gguf", "--verify", "tree"],
    "duodec-tree-full": ["--method", "duodec", "--draft", "demo-draft-gguf", "--verify", "tree",
                         "--seq-budget", "full"],
}
MAIN = ["ar", "sps", "sps-gguf", "pld", "rest", "duodec"]
ABLATIONS = ["duodec-k1", "duodec-gamma8", "duodec-full", "duodec-process", "duodec-time", "duodec-preverify",
             "duodec-tree", "duodec-tree-full"]


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "python": platform.python_version(),
            "torch": torch.__version__}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=",".join(MAIN), help=f"comma-separated, from {', '.join(VARIANTS)}")
    ap.add_argument("--ablations", action="store_true", help=f"also run {', '.join(ABLATIONS)}")
    ap.add_argument("--out", required=True, help="folder for the answer files and table.md")
    ap.add_argument("--bench", default="demo")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--target", default="demo-target")
    ap.add_argument("--target-threads", type=int, default=1)
    ap.add_argument("--draft-threads", type=int, default=1)
    ap.add_argument("--device", default=None)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args(argv)
    names = args.methods.split(",") + (ABLATIONS if args.ablations else [])
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        sys.exit(f"error: unknown method variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    if "ar" not in names:
        names = ["ar"] + names
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = ["--target", args.target, "--bench", args.bench, "--answer-file", "-",
              "--max-new-tokens", str(args.max_new_tokens), "--temperature", str(args.temperature),
              "--target-threads", str(args.target_threads), "--draft-threads", str(args.draft_threads)]
    if args.device:
        common += ["--device", args.device]
    questions = questions_for(args.bench)[:args.limit]
    _, entry = resolve(args.target)
    template = entry.get("template", "raw")
    sampling = Sampling(args.temperature)

    runs = {}
    for name in names:
        margs = inference_parser().parse_args(common + VARIANTS[name])
        method = load_method(margs.method)
        models = load_models(method, margs, resolve(margs.target)[0])
        fwd = method.make(margs, **models)
        settings = {"variant": name, "method": margs.method, "draft": margs.draft, **getattr(fwd, "settings", {})}
        runs[name] = (fwd, models["target"], settings, out / f"{name}.jsonl")
        print(f"{name}: {json.dumps(settings)}", flush=True)

    done = {n: {a["question_id"] for a in answers.repair(r[3])} for n, r in runs.items()}
    for q in questions[:args.warmup]:
        for name, (fwd, target, _, _) in runs.items():
            answer_question(fwd, q, target.tokenizer, template, 32, sampling, torch.Generator().manual_seed(0),
                            target.max_length, target.device)
    for i, q in enumerate(tqdm(questions, desc="questions")):
        order = names[i % len(names):] + names[:i % len(names)]
        for name in order:
            fwd, target, settings, path = runs[name]
            if q["question_id"] in done[name]:
                continue
            gen = torch.Generator(target.device).manual_seed(i)
            choice = answer_question(fwd, q, target.tokenizer, template, args.max_new_tokens, sampling, gen,
                                     target.max_length, target.device)
            choice["settings"] = settings
            answers.append(path, answer_record(q, choice, name))
    for fwd, *_ in runs.values():
        if hasattr(fwd, "close"):
            fwd.close()

    host = machine()
    report = [f"# {args.bench}: {len(questions)} questions, {args.max_new_tokens} new tokens, "
              f"temperature {args.temperature}", "", "Machine: " + json.dumps(host), ""]
    base = answers.load(out / "ar.jsonl")
    summary = {}
    for name in names:
        if name == "ar":
            continue
        res = compare(answers.load(out / f"{name}.jsonl"), base)
        summary[name] = res
        report += ["```", table(res, f"{name} vs ar"), "```", ""]
    text = "\n".join(report)
    (out / "table.md").write_text(text + "\n")
    (out / "summary.json").write_text(json.dumps({"machine": host, "results": summary}, indent=1) + "\n")
    print(text)


if __name__ == "__main__":
    main()
