"""The sampling checks themselves (tests/lossless.py): at the sizes the suite uses and its level ALPHA, they pass
draws from the target's distribution and fail draws from a tilted one, so a passing sampling test says something."""
import numpy as np
import torch

from src.verify import logits_to_probs
from tests.lossless import ALPHA, chi_square, exact_first_tokens, pit_pvalue

EOS = 15


class Unigram:
    """A stand-in target whose next-token distribution is the same after any prefix."""
    eos_token_id = EOS

    def __init__(self, logits):
        self.logits = logits
        self.tokenizer = range(len(logits))  # (its length is all exact_first_tokens asks of it)

    def reset(self):
        pass

    def forward(self, ids):
        return self.logits.expand(len(ids), -1)


def draws(logits, temperature, n, length, seed):
    """n outputs of up to `length` tokens, each cut before its first EOS."""
    p = logits_to_probs(logits, temperature).double().numpy()
    rows = np.random.default_rng(seed).choice(len(p), size=(n, length), p=p / p.sum())
    cut = lambda row: row[:list(row).index(EOS)] if EOS in row else row
    return [tuple(int(t) for t in cut(row)) for row in rows]


def test_checks_pass_the_target_and_fail_a_tilt():
    logits = torch.randn(16, generator=torch.Generator().manual_seed(0))
    target = Unigram(logits)
    right, tilted = (draws(logits, t, 1500, 8, seed=1) for t in (1.0, 1.2))
    assert pit_pvalue(target, [1], right, 8)[0] > ALPHA
    assert pit_pvalue(target, [1], tilted, 8)[0] < 1e-9  # 1500 answers of 8 tokens, as the pipelined test draws
    dist = exact_first_tokens(target, [1], 3)
    assert chi_square(draws(logits, 1.0, 20000, 3, seed=2), dist) > ALPHA
    assert chi_square(draws(logits, 1.2, 20000, 3, seed=2), dist) < 1e-9  # 20000 answers of 3, as the slow tier
