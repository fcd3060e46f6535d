"""Prompt lookup decoding: draft the tokens that followed the latest n-gram's earlier occurrence."""
from src.argtypes import positive
from src.model.base import speculative_loop


def add_args(ap):
    ap.add_argument("--max-ngram", type=positive, default=3, help="longest n-gram to match")
    ap.add_argument("--min-ngram", type=positive, default=1, help="shortest n-gram to match")
    ap.add_argument("--num-pred", type=positive, default=10, help="tokens proposed per match")


def check_args(args):
    if args.min_ngram > args.max_ngram:
        return f"--min-ngram ({args.min_ngram}) must not exceed --max-ngram ({args.max_ngram})"


class NgramIndex:
    """Where each n-gram of a growing sequence first occurs, for n from max_ngram down to min_ngram. Each
    round indexes only the tokens added since the last, where a scan of the whole sequence would cost tens
    of microseconds a round by the end of an answer. (Hand-written: PLD's reference scans with numpy.)"""

    def __init__(self, max_ngram=3, min_ngram=1):
        self.ns = range(max_ngram, min_ngram - 1, -1)
        self.first = {n: {} for n in self.ns}
        self.seen = []

    def extend(self, seq):
        """Index seq, which extends what was indexed before (a new sequence starts over)."""
        if seq[:len(self.seen)] != self.seen:
            self.first, self.seen = {n: {} for n in self.ns}, []
        for n, first in self.first.items():
            # an n-gram starting at i counts once a token follows it: i + n < len(seq)
            for i in range(max(0, len(self.seen) - n), len(seq) - n):
                first.setdefault(tuple(seq[i:i + n]), i)
        self.seen = list(seq)

    def lookup(self, seq, num_pred=10):
        """The tokens after the first earlier occurrence of seq's last n tokens, for the longest n that has
        one."""
        self.extend(seq)
        for n in self.ns:
            i = self.first[n].get(tuple(seq[-n:])) if len(seq) > n else None
            if i is not None:
                return list(seq[i + n:i + n + num_pred])
        return []


def make(args, target, draft=None):
    def forward(prompt_ids, max_new_tokens, sampling, gen):
        index = NgramIndex(args.max_ngram, args.min_ngram)
        return speculative_loop(target, prompt_ids, max_new_tokens, sampling, gen, lambda seq, budget: (
            index.lookup(seq, min(args.num_pred, budget)), None))

    forward.settings = {"max_ngram": args.max_ngram, "min_ngram": args.min_ngram, "num_pred": args.num_pred}
    return forward
