"""Decoding methods, one module each. A method module provides

    DRAFT = None | "any" | "gguf" | "hf" | "optional-hf"   what --draft it needs (any = an HF dir or a GGUF file)
    add_args(group)                 its own flags (optional), in its own argument group
    check_args(args)                checks between its flags that argparse cannot express (optional)
    make(args, target, draft=None)  -> forward(prompt_ids, max_new_tokens, sampling, gen) -> Generation

`args.cores` is the run's core plan (base.Cores): `make_method` adds it, and runs every call of the method
with each side on the threads the regime gives it, recording in each answer the threads the backends saw.
Only the chosen method's module is imported, so one method's dependencies (draftretriever for REST)
are not needed to run another.
"""
import argparse
import importlib
import os
import sys
import time
from pathlib import Path

import numpy as np

from src.argtypes import Parser
from src.model.base import Cores, Method

METHODS = {
    "ar": "src.model.autoregressive",
    "sps": "src.model.sps",
    "pld": "src.model.pld",
    "rest": "src.model.rest",
    "duodec": "src.model.duodec",
    "pearl": "src.model.pearl",
    "lookahead": "src.model.lookahead",
    "hf": "src.model.hf_generate",
}


DRAFT_CONTEXT = 8192  # the most a llama.cpp draft holds


class NotImplementedMethod(ValueError):
    pass


def load_method(name):
    """The method's module. A module that fails to import raises as it is: a broken method is loud."""
    if name not in METHODS:
        raise NotImplementedMethod(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    try:
        return importlib.import_module(METHODS[name])
    except ModuleNotFoundError as e:
        if e.name == METHODS[name]:
            raise NotImplementedMethod(f"method {name!r} is not implemented yet") from None
        if e.name and not e.name.startswith("src."):  # a missing dependency, not a bug in the module
            raise NotImplementedMethod(f"method {name!r} needs the package {e.name!r}, which is not installed "
                                       f"(bash cmds/test.sh installs requirements.txt)") from None
        raise


def add_method_args(module, ap, name):
    if hasattr(module, "add_args"):
        module.add_args(ap.add_argument_group(f"{name} options"))


def method_args(name, flags=()):
    """A method's own flags parsed from `flags` (its defaults for the rest), checked."""
    module = load_method(name)
    ap = Parser(prog=f"--method {name}")
    add_method_args(module, ap, name)
    args = ap.parse_args(list(flags))
    check_method_args(module, args, ap)
    return module, args


def method_flags(module, args):
    """The values of the method's own flags in `args` (for the configuration an answer file records)."""
    ap = Parser()
    add_method_args(module, ap, "")
    return {k: getattr(args, k) for k in vars(ap.parse_args([]))}


def check_method_args(module, args, ap):
    problem = module.check_args(args) if hasattr(module, "check_args") else None
    if problem:
        ap.error(problem)


def load_target(name_or_path, device=None, threads=None, device_map=None, dtype="auto"):
    """`dtype`: auto (bf16 on a GPU, fp32 on the CPU), fp32, bf16 or fp16; every method uses the same."""
    from src.backends.target import DTYPES, Target
    from src.utils import resolve

    path, entry = resolve(name_or_path, "--target")
    target = Target(path, device=device, threads=threads, device_map=device_map, twin=entry.get("twin"),
                    dtype=DTYPES.get(dtype))
    # the registry name (a twin's source's) finds per-model data such as REST's datastore
    target.name = str(name_or_path).split(":", 2)[-1]
    target.template = entry.get("template", "raw")
    return target


def default_draft_threads(target):
    """1 beside a CPU target (the demo's setting); beside a GPU target every core but two, which the
    target's Python thread needs to launch its kernels."""
    if target.device is None or target.device.type == "cpu":
        return 1
    return max(1, len(os.sched_getaffinity(0)) - 2)


def plan_cores(regime, target, target_threads=None, draft_threads=None, gguf_draft=None, repack="auto"):
    """The run's Cores: the draft owns `draft_threads` cores, the target the rest (or `target_threads`). Without
    --draft-threads a GGUF draft beside a GPU target gets the fastest count a short sweep measures (among
    default_draft_threads, the cores left to it); beside a CPU target, one core. In split the two must not
    overlap on a CPU target; a host too small to split them gets a warning, and both sides then share its cores."""
    every = len(os.sched_getaffinity(0))
    draft, sweep = draft_threads or default_draft_threads(target), None
    if draft_threads is None and draft > 1 and gguf_draft:
        draft, sweep = sweep_draft_threads(gguf_draft, draft, repack)
    on_cpu = target.device is None or target.device.type == "cpu"
    own = target_threads or max(1, every - draft)
    if regime == "split" and on_cpu and own + draft > every:
        print(f"warning: --cores split: the target's {own} and the draft's {draft} threads exceed the {every} cores "
              f"here, so the two sides share cores", file=sys.stderr)
    return Cores(regime, own, draft, every, sweep)


def sweep_draft_threads(name_or_path, most, repack="auto", reps=7):
    """The fastest llama.cpp thread count for one draft step (64 tokens cached) among 1, 2, 4, ... and `most`,
    interleaved over `reps` rounds: a small draft seldom scales to many cores, and each thread costs a wake-up
    per step. Returns (threads, {threads: median ms per step})."""
    from src.backends.draft import Draft
    from src.utils import resolve

    counts = sorted({min(2 ** i, most) for i in range(most.bit_length() + 1)})
    draft = Draft(resolve(name_or_path, "--draft")[0], threads=1, n_ctx=256, n_seq=1, repack=repack)
    try:
        ctx = [int(t) for t in np.random.default_rng(0).integers(3, draft.n_real, 64)]
        draft.eval(ctx)
        times = {n: [] for n in counts}
        for _ in range(reps):
            for n in counts:
                draft.set_threads(n)
                t0 = time.perf_counter()
                draft.eval([ctx[-1]])
                times[n].append(time.perf_counter() - t0)
                draft.rollback(len(ctx))
    finally:
        draft.close()
    ms = {n: round(1e3 * float(np.median(ts)), 4) for n, ts in times.items()}
    return min(ms, key=ms.get), ms


def make_method(module, args, target, draft, cores):
    """The method's `Method`, every call of it run on the regime's threads: a side that runs alone takes its
    own cores (split) or every core (shared). The answer records the most threads each backend saw in the call
    (a method that sets its own per round, DuoDecoding, records them itself)."""
    from src.backends.target import Target

    method = module.make(argparse.Namespace(**vars(args), cores=cores), target, draft)
    t, d = cores.sides()
    gguf = draft is not None and not isinstance(draft, Target)

    def forward(prompt_ids, max_new_tokens, sampling, gen):
        target.set_threads(t)
        if gguf:
            draft.set_threads(d)
        seen = (target.watch_threads(), draft.watch_threads() if draft is not None else None)
        out = method(prompt_ids, max_new_tokens, sampling, gen)
        used = {"target": seen[0](), "draft": seen[1]() if seen[1] else None}
        if draft is not None and not gguf:  # an HF draft runs on the target's torch threads
            used["draft"] = max(used["draft"] or 0, used["target"])
        out.stats.setdefault("threads", used)
        return out

    return Method(forward, method.settings, method.close, method.worker)


def check_draft(module, name, draft_name):
    """Before any model loads: the --draft the method needs is given, and is of the kind it takes."""
    from src.utils import ModelNotFound, resolve

    need = getattr(module, "DRAFT", None)
    if need in ("any", "gguf", "hf") and not draft_name:
        return f"method {name!r} needs --draft ({'an HF directory' if need == 'hf' else 'a registry name or path'})"
    if need in ("gguf", "hf") and draft_name:
        try:
            path, _ = resolve(draft_name, "--draft")
        except ModelNotFound as e:
            return str(e)
        if Path(path).is_dir() != (need == "hf"):
            return f"method {name!r} takes {'an HF directory' if need == 'hf' else 'a GGUF file'} as --draft, " \
                   f"not {path}"
    return None


def load_draft(module, name, draft_name, target, threads=1, repack="auto"):
    """The draft the method asks for (None if none), checked against the target's vocabulary."""
    from src.utils import resolve

    need = getattr(module, "DRAFT", None)
    if need is None or (need == "optional-hf" and not draft_name):
        return None
    if not draft_name:
        raise ValueError(f"method {name!r} needs --draft (a registry name or path)")
    draft_path, entry = resolve(draft_name, "--draft")
    hf = Path(draft_path).is_dir()
    if hf and need == "gguf":
        raise ValueError(f"method {name!r} needs a GGUF draft run by llama.cpp, not {draft_path} "
                         f"(python -m src.tools.convert_to_gguf converts it)")
    if not hf and need in ("hf", "optional-hf"):
        raise ValueError(f"method {name!r} takes an HF directory as --draft, not {draft_path}")
    if hf:
        from src.backends.target import Target
        draft = Target(draft_path, device=str(target.device), dtype=target.dtype, twin=entry.get("twin"))
        if len(draft.tokenizer) != len(target.tokenizer) or draft.tokenizer.get_vocab() != target.tokenizer.get_vocab():
            raise ValueError(f"draft {draft_path} does not share the target's tokenizer")
        return draft
    from src.backends.draft import Draft, check_vocab
    # a long context costs memory and every whole-cache walk of llama.cpp's; prompts are checked against it
    n_ctx = min(target.max_length or DRAFT_CONTEXT, DRAFT_CONTEXT)
    draft = Draft(draft_path, threads=threads or default_draft_threads(target), n_ctx=n_ctx, repack=repack)
    check_vocab(draft, target.tokenizer)
    target.max_length = n_ctx
    return draft
