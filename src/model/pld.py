"""Prompt lookup decoding: draft the tokens that followed the latest n-gram's earlier occurrence."""
from src.argtypes import positive
from src.model.base import Method, speculative_loop
from src.model.ngram import NgramIndex


def add_args(ap):
    ap.add_argument("--max-ngram", type=positive, default=3, help="longest n-gram to match")
    ap.add_argument("--min-ngram", type=positive, default=1, help="shortest n-gram to match")
    ap.add_argument("--num-pred", type=positive, default=10, help="tokens proposed per match")


def check_args(args):
    if args.min_ngram > args.max_ngram:
        return f"--min-ngram ({args.min_ngram}) must not exceed --max-ngram ({args.max_ngram})"


def make(args, target, draft=None):
    def forward(prompt_ids, max_new_tokens, sampling, gen):
        index = NgramIndex(args.max_ngram, args.min_ngram)
        return speculative_loop(target, prompt_ids, max_new_tokens, sampling, gen, lambda seq, budget: (
            index.lookup(seq, min(args.num_pred, budget)), None))

    return Method(forward, {"max_ngram": args.max_ngram, "min_ngram": args.min_ngram, "num_pred": args.num_pred})
