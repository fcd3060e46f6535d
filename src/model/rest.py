"""REST: retrieval-based drafts. The continuations of the longest suffix found in a datastore form a
token tree that the target verifies in one forward (4-D attention mask, explicit positions)."""
from pathlib import Path

import draftretriever

from src.argtypes import positive, ranged
from src.model.base import Method, build_tree, decode_loop, tree_step


def add_args(ap):
    ap.add_argument("--datastore", default=None, help="draftretriever index (default: the registry's)")
    ap.add_argument("--max-span", type=positive, default=16, help="longest suffix to look up")
    # draftretriever 0.1.1 aborts the process on a one-token query
    ap.add_argument("--min-span", type=ranged(int, 2), default=2, help="shortest suffix to look up (>= 2)")
    ap.add_argument("--num-draft", type=positive, default=64, help="most tree nodes per round")


def check_args(args):
    if args.min_span > args.max_span:
        return f"--min-span ({args.min_span}) must not exceed --max-span ({args.max_span})"


def retrieve(reader, seq, max_span=16, min_span=2, num_draft=64):
    """Continuations of the longest suffix of seq (max_span down to min_span) that the datastore holds."""
    if min_span < 2:  # draftretriever 0.1.1 aborts the process on a one-token query
        raise ValueError("REST needs --min-span >= 2")
    for span in range(max_span, min_span - 1, -1):
        if len(seq) < span:
            continue
        found = reader.search(list(seq[-span:]), choices=num_draft)[0]
        if found:
            return [[t for t in s if t >= 0] for s in found]
    return []


def generate(target, reader, prompt_ids, max_new_tokens, sampling, gen, max_span=16, min_span=2, num_draft=64):
    def step(seq, budget):
        found = [s[:budget] for s in retrieve(reader, seq, max_span, min_span, num_draft)] if budget > 0 else []
        tokens, parents = build_tree(found, num_draft)
        path, nxt, _ = tree_step(target, seq, tokens, parents, sampling, gen)
        return [tokens[n] for n in path] + [nxt]

    return decode_loop(target, prompt_ids, max_new_tokens, step)


def make(args, target, draft=None):
    from src.utils import REST_DATASTORES, portable

    store = args.datastore or REST_DATASTORES.get(getattr(target, "name", None))
    if not store or not Path(store).is_file():
        raise FileNotFoundError(f"REST datastore not found: {store}. Build one with "
                                f"`python -m src.tools.build_rest_datastore` and pass --datastore PATH.")
    reader = draftretriever.Reader(index_file_path=str(store))

    def forward(prompt_ids, max_new_tokens, sampling, gen):
        return generate(target, reader, prompt_ids, max_new_tokens, sampling, gen,
                        args.max_span, args.min_span, args.num_draft)

    return Method(forward, {"datastore": portable(store), "max_span": args.max_span, "min_span": args.min_span,
                        "num_draft": args.num_draft})
