"""Run several methods on the same questions, interleaved, and print the comparison with AR.

    python -m src.eval.compare --bench demo --methods ar,sps,pld,rest,duodec [--out DIR | --resume DIR]

Each question is answered by every method in turn (the order shuffled per question), so slow drifts
of a noisy machine hit all methods alike: `src.eval.inference.run_eval` with one run per method, all
on one loaded target. Every call measures afresh into a new folder (default
results/<bench>-<device>/runs/<date>-<host>/); only --resume DIR continues an earlier one.
"""
import argparse
import json
import sys
import time
from pathlib import Path

from src.argtypes import Parser, positive
from src.eval import answers
from src.eval.cli import run_cli
from src.eval.host import host_tag, machine
from src.eval.inference import Run, add_common_args, answer_config, close_run, run_eval, run_settings
from src.eval.report import load_run, made_as, print_beside, write_report
from src.eval.questions import BENCHES, SPLITS, per_category, questions_for
from src.eval.speed import compare, table
from src.model import load_draft, load_target, make_method, method_args, plan_cores
from src.model.base import Sampling
from src.utils import ROOT

# name -> (method, draft kind: None | "hf" | "gguf", the method's flags)
VARIANTS = {
    "ar": ("ar", None, []),
    "sps": ("sps", "hf", []),
    "sps-gguf": ("sps", "gguf", []),
    "pld": ("pld", None, []),
    "lookahead": ("lookahead", None, []),
    "rest": ("rest", None, []),
    "duodec": ("duodec", "gguf", []),
    # DuoDecoding's rounds with the HF draft on the target's device and cores (the paper's ablation of the CPU)
    "pearl": ("pearl", "hf", []),
    # the peers a user already has: transformers' own generate()
    "hf-ar": ("hf", None, ["--mode", "ar"]),
    "hf-assisted": ("hf", "hf", ["--mode", "assisted"]),
    "hf-lookup": ("hf", None, ["--mode", "lookup"]),
    # ablations: the paper's scheme, then one lever of the default undone (or an option added) at a time
    "duodec-paper": ("duodec", "gguf", ["--preset", "paper"]),
    # the default before the overlapped mode on split cores: the mode chosen by the rounds' measured costs
    "duodec-previous": ("duodec", "gguf", ["--mode", "auto"]),
    # the default before the catch-up: after a rejection, the paper's pre-verify round (the target's own token)
    "duodec-no-catch-up": ("duodec", "gguf", ["--catch-up", "0"]),
    "duodec-no-lookup": ("duodec", "gguf", ["--lookup-ngram", "0"]),
    "duodec-no-extend": ("duodec", "gguf", ["--no-lookup-extend"]),
    "duodec-greedy-drafts": ("duodec", "gguf", ["--drafts", "greedy"]),
    "duodec-wait-prompt": ("duodec", "gguf", ["--wait-for-prompt"]),
}
MAIN = ["ar", "hf-ar", "hf-assisted", "hf-lookup", "sps", "sps-gguf", "pld", "lookahead", "rest", "pearl", "duodec"]
ABLATIONS = [name for name in VARIANTS if name.startswith("duodec-")]


def parser():
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=",".join(MAIN), help=f"comma-separated, from {', '.join(VARIANTS)}")
    ap.add_argument("--ablations", action="store_true", help=f"also run {', '.join(ABLATIONS)}")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--out", default=None, help="a new folder for this run (default: under results/)")
    where.add_argument("--resume", default=None, help="continue the run in this folder")
    ap.add_argument("--under", default=None, help="where new run folders go, as UNDER/runs/<date>-<host>/ "
                    "(default: results/<bench>-<device>)")
    ap.add_argument("--bench", default="demo", choices=sorted(BENCHES))
    ap.add_argument("--question-file", default=None)
    ap.add_argument("--limit", type=positive, default=None)
    ap.add_argument("--categories", default=None, help="comma-separated: only these categories' questions")
    ap.add_argument("--per-category", type=positive, default=None,
                    help="N questions of each category from the --split's first, categories taking turns "
                         "(before --limit; default with --split: 4)")
    ap.add_argument("--split", choices=sorted(SPLITS), default=None,
                    help="dev: each category's questions 0-3 (0-based), on which defaults are chosen; test: 10-13, "
                         "on which none is, for the figures one reports")
    ap.add_argument("--hf-draft", default="demo-draft", help="the draft of 'sps' (HF, on the target's device)")
    ap.add_argument("--gguf-draft", default="demo-draft-gguf", help="the draft of the llama.cpp variants")
    ap.add_argument("--time-budget", type=positive, default=None, help="seconds: start no question after "
                    "this long (counted from start-up); what was answered is written and reported")
    ap.add_argument("--reference", nargs="*", default=None, help="earlier run folders: write report.md with "
                    "this run beside them, and print that table")
    add_common_args(ap)
    ap.set_defaults(warmup=2, target_threads=None)
    return ap


def run_folder(args, host):
    """A fresh folder, or the one to resume; never an earlier run's folder by accident."""
    if args.resume:
        folder = Path(args.resume)
        if not folder.is_dir():
            sys.exit(f"error: --resume {folder}: no such run folder")
        return folder
    if args.out:
        folder = Path(args.out)
    else:
        device = "gpu" if host["gpu"] != "none" and args.device != "cpu" else "cpu"
        under = Path(args.under) if args.under else ROOT / "results" / f"{args.bench}-{device}"
        folder = under / "runs" / f"{time.strftime('%Y%m%d-%H%M%S')}-{host_tag(host)}-{args.regime}"
    if folder.is_dir() and any(folder.glob("*.jsonl")):
        sys.exit(f"error: {folder} holds an earlier run's answers: pass --resume {folder} to continue it, "
                 f"or another --out")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def make_runs(names, args, target, folder, cores):
    drafts = {"hf": args.hf_draft, "gguf": args.gguf_draft}
    runs, loaded, hf_draft = [], [], None
    for name in names:
        method, kind, flags = VARIANTS[name]
        module, margs = method_args(method, flags)
        if kind == "hf" and hf_draft is not None:
            draft = hf_draft  # one HF draft serves every variant: they run one after another
        else:
            draft = load_draft(module, method, drafts.get(kind), target, cores.draft, args.draft_repack)
            hf_draft = draft if kind == "hf" else hf_draft
        forward = make_method(module, margs, target, draft, cores)
        settings = {"variant": name,
                    **run_settings(args, method, drafts.get(kind), target, draft, forward, target.template, cores)}
        config = answer_config(args, method, vars(margs), drafts.get(kind), target.template, variant=name)
        runs.append(Run(name, forward, folder / f"{name}.jsonl", settings, config))
        loaded.append(draft)
        print(f"{name}: {json.dumps(settings)}", flush=True)
    return runs, loaded


def main(argv=None):
    ap = parser()
    args = ap.parse_args(argv)
    names = list(dict.fromkeys(["ar"] + args.methods.split(",") + (ABLATIONS if args.ablations else [])))
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"--methods: unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    started, host = time.monotonic(), machine()
    questions = questions_for(args.bench, args.question_file)
    if args.categories:
        wanted, known = args.categories.split(","), sorted({q["category"] for q in questions})
        if set(wanted) - set(known):
            ap.error(f"--categories: no {', '.join(sorted(set(wanted) - set(known)))} in {args.bench}; "
                     f"choose from {', '.join(known)}")
        questions = [q for q in questions if q["category"] in wanted]
    if args.per_category or args.split:
        questions = per_category(questions, args.per_category or 4, SPLITS.get(args.split, 0))
    questions = questions[:args.limit]
    folder = run_folder(args, host)
    with answers.locked([folder / f"{name}.jsonl" for name in names]):  # one writer, before any model loads
        measure(args, names, folder, host, questions, started)
    print(summarise(folder, names, args, host, len(questions)))
    if args.reference is not None:
        print_beside(write_report(folder, args.reference))
    print(f"run folder: {folder}")
    return folder


def measure(args, names, folder, host, questions, started):
    target = load_target(args.target, args.device, args.target_threads, args.device_map, args.dtype)
    gguf = args.gguf_draft if any(VARIANTS[n][1] == "gguf" for n in names) else None
    cores = plan_cores(args.regime, target, args.target_threads, args.draft_threads, gguf, args.draft_repack)
    target.set_threads(cores.target)
    runs, drafts = make_runs(names, args, target, folder, cores)
    (folder / "machine.json").write_text(json.dumps(host, indent=1) + "\n")
    try:
        run_eval(runs, questions, target.tokenizer, template=target.template, max_new_tokens=args.max_new_tokens,
                 sampling=Sampling(args.temperature, args.top_k, args.top_p), seed=args.seed,
                 max_length=target.max_length, device=target.device, warmup=args.warmup,
                 deadline=started + args.time_budget if args.time_budget else None,
                 force_resume=args.force_resume, repair=args.repair)
    finally:
        for run, draft in zip(runs, drafts):
            close_run(run.forward, draft)


def summarise(folder, names, args, host, n_questions):
    """table.md and summary.json of a run folder; returns the text."""
    report = [f"# {args.bench}: {n_questions} questions, {args.max_new_tokens} new tokens, "
              f"temperature {args.temperature}, cores {args.regime}"
              + (f", {args.split} split" if args.split else ""), "", "Machine: " + json.dumps(host), ""]
    base = answers.load(folder / "ar.jsonl")
    summary = {}
    for name in names:
        if name == "ar":
            continue
        res = compare(answers.load(folder / f"{name}.jsonl"), base, labels=(f"{name}.jsonl", "ar.jsonl"))
        summary[name] = res
        report += ["```", table(res, f"{name} vs ar"), "```", ""]
    text = "\n".join(report)
    (folder / "table.md").write_text(text + "\n")
    made = made_as(load_run(folder))  # kept: a reference run may later keep only its summary
    (folder / "summary.json").write_text(json.dumps({"machine": host, "split": args.split, "made_as": made,
                                                     "results": summary}, indent=1) + "\n")
    return text


if __name__ == "__main__":
    run_cli(main)
