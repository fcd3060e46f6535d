"""Prompt lookup's index: where each n-gram of a growing sequence first occurs. A candidate source shared by
PLD and DuoDecoding's free candidates (not a method)."""


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

    def lookup(self, seq, num_pred=10, tail=()):
        """The tokens after the first earlier occurrence of the last n tokens of seq + tail, for the longest n that
        has one. Only seq is indexed: a tail (drafted, not yet verified) may be dropped next round, and indexing it
        would make the index start over."""
        self.extend(seq)
        whole = list(seq) + list(tail)
        for n in self.ns:
            i = self.first[n].get(tuple(whole[-n:])) if len(whole) > n else None
            if i is not None:
                return whole[i + n:i + n + num_pred]
        return []
