"""Decoding methods, one module each. A method module provides

    DRAFT = None | "any" | "gguf"   what --draft it needs (any = an HF dir or a GGUF file)
    add_args(parser)                its own flags (optional)
    make(args, target, draft=None)  -> forward(prompt_ids, max_new_tokens, sampling, gen) -> Generation
"""
import importlib
from pathlib import Path

METHODS = {
    "ar": "src.model.autoregressive",
    "sps": "src.model.sps",
    "pld": "src.model.pld",
    "rest": "src.model.rest",
    "duodec": "src.model.duodec",
}


class NotImplementedMethod(ValueError):
    pass


def load_method(name):
    if name not in METHODS:
        raise NotImplementedMethod(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    try:
        return importlib.import_module(METHODS[name])
    except ModuleNotFoundError as e:
        if e.name == METHODS[name]:
            raise NotImplementedMethod(f"method {name!r} is not implemented yet") from None
        raise


def load_models(method, args, target_path):
    """Load the target and, when the method needs one, the draft (checked against the target's vocabulary)."""
    from src.backends.target import Target
    from src.utils import resolve

    target = Target(target_path, device=args.device, threads=args.target_threads, device_map=args.device_map)
    need = getattr(method, "DRAFT", None)
    if need is None:
        return {"target": target}
    if not args.draft:
        raise ValueError(f"method {args.method!r} needs --draft (a registry name or path)")
    draft_path, _ = resolve(args.draft, "--draft")
    if Path(draft_path).is_dir():
        if need == "gguf":
            raise ValueError(f"method {args.method!r} needs a GGUF draft run by llama.cpp, not {draft_path}")
        draft = Target(draft_path, device=str(target.device), dtype=target.dtype)
        if len(draft.tokenizer) != len(target.tokenizer) or draft.tokenizer.get_vocab() != target.tokenizer.get_vocab():
            raise ValueError(f"draft {draft_path} does not share the target's tokenizer")
    else:
        from src.backends.draft import Draft, check_vocab
        draft = Draft(draft_path, threads=args.draft_threads, n_ctx=target.max_length or 4096)
        check_vocab(draft, target.tokenizer)
    return {"target": target, "draft": draft}
