"""Prompt lookup decoding: draft the tokens that followed the latest n-gram's earlier occurrence."""
import numpy as np

from src.argtypes import positive
from src.model.base import speculative_loop


def add_args(ap):
    ap.add_argument("--max-ngram", type=positive, default=3, help="longest n-gram to match")
    ap.add_argument("--min-ngram", type=positive, default=1, help="shortest n-gram to match")
    ap.add_argument("--num-pred", type=positive, default=10, help="tokens proposed per match")


def check_args(args):
    if args.min_ngram > args.max_ngram:
        return f"--min-ngram ({args.min_ngram}) must not exceed --max-ngram ({args.max_ngram})"


def lookup(seq, max_ngram=3, min_ngram=1, num_pred=10):
    """The tokens after the first earlier occurrence of the last n tokens, for n from max_ngram down."""
    arr = np.asarray(seq)
    for n in range(max_ngram, min_ngram - 1, -1):
        if len(arr) <= n:
            continue
        windows = np.lib.stride_tricks.sliding_window_view(arr[:-1], n)
        hits = np.flatnonzero((windows == arr[-n:]).all(1))
        for start in hits + n:
            if start < len(arr):
                return arr[start:start + num_pred].tolist()
    return []


def make(args, target, draft=None):
    def forward(prompt_ids, max_new_tokens, sampling, gen):
        return speculative_loop(target, prompt_ids, max_new_tokens, sampling, gen, lambda seq, budget: (
            lookup(seq, args.max_ngram, args.min_ngram, min(args.num_pred, budget)), None))

    forward.settings = {"max_ngram": args.max_ngram, "min_ngram": args.min_ngram, "num_pred": args.num_pred}
    return forward
