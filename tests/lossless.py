"""Helpers for the lossless tests: greedy comparison with AR under the tie rule, exact AR distributions."""
import logging

import numpy as np
import torch
from scipy.stats import chisquare

from src.model.autoregressive import generate as ar_generate
from src.model.base import Sampling
from src.verify import logits_to_probs

log = logging.getLogger("lossless")
TIE_GAP = 1e-4
# The significance level of every sampling test. About twenty run in a full pass, over rounds that machine load
# reshapes (so their draws differ from run to run): at 0.01 one pass in seven or so would fail by chance alone.
# At 1e-3 a 20% tilt of the target's distribution still fails by far (test_lossless_checks.py).
ALPHA = 1e-3
PROMPTS = [
    "def add(a, b):\n", "class Point:\n", "for i in range(10):\n", "import os\n", "The quick brown fox",
    "if __name__ == '__main__':\n", "    return a + b\n", "def __init__(self, x, y):\n", "print(i * i)\n",
    "import sys\n\n", "self.x = x\n", "jumps over the lazy dog. ", "main()\n", "The lazy dog", "class Add:\n",
    "for x in y:\n", "def main():\n    ", "return self", "quick brown", "    def f(self):\n",
    "a = b + c\n", "# a comment\n",
]


_AR = {}  # AR's answers, per model and prompt: many tests compare many methods with the same references


def ar_reference(target, prompt, max_new_tokens):
    """AR's greedy answer, computed once per session for a model (its path, dtype and weights' checksum)."""
    first = next(target.model.parameters())
    key = (target.model.config._name_or_path, str(first.dtype), float(first.detach().double().sum()), tuple(prompt),
           max_new_tokens)
    if key not in _AR:
        _AR[key] = ar_generate(target, prompt, max_new_tokens, Sampling()).token_ids
    return _AR[key]


def greedy_mismatches(target, prompts, method_outputs, max_new_tokens, name=""):
    """Compare each method output with AR's. A divergence is allowed only where the target's top-2 logit
    gap is below TIE_GAP; returns the list of (prompt index, position, gap) of allowed divergences."""
    allowed = []
    for i, (p, out) in enumerate(zip(prompts, method_outputs)):
        ref = ar_reference(target, p, max_new_tokens)
        if out == ref:
            continue
        j = next((k for k, (a, b) in enumerate(zip(ref, out)) if a != b), min(len(ref), len(out)))
        target.reset()
        top2 = torch.topk(target.forward(p + ref[:j])[-1], 2).values
        gap = float(top2[0] - top2[1])
        assert gap < TIE_GAP, f"{name} prompt {i}: output differs from AR at new token {j} (top-2 gap {gap:.3g})"
        log.warning("prompt %d: divergence at token %d within the tie tolerance (gap %.2g)", i, j, gap)
        allowed.append((i, j, gap))
    return allowed


def assert_run_matches_ar(folder, names, n_questions, dtype_name):
    """Every answer of every named row of a compare run: identical to AR's, or first different at a near-tie.
    Returns the rows' answers by name."""
    from src.eval import answers
    from src.eval.report import NEAR_TIE, divergence
    ar = {r["question_id"]: r for r in answers.load(folder / "ar.jsonl")}
    assert len(ar) == n_questions
    rows = {}
    for name in names:
        rows[name] = answers.load(folder / f"{name}.jsonl")
        assert len(rows[name]) == n_questions
        for r in rows[name]:
            d = divergence(r, ar[r["question_id"]])
            assert d is None or (d[2] is not None and d[2] <= NEAR_TIE[dtype_name]), f"{name}: {d}"
    return rows


def exact_first_tokens(target, prompt, n=3, temperature=1.0):
    """AR's exact distribution of the first n new tokens, by enumeration. EOS ends a sequence early and,
    as in the methods' output, is not part of it."""
    eos, vocab = target.eos_token_id, len(target.tokenizer)
    dist = {}

    def walk(prefix, prob):
        if len(prefix) == n or (prefix and prefix[-1] == eos):
            key = tuple(prefix[:-1] if prefix and prefix[-1] == eos else prefix)
            dist[key] = dist.get(key, 0.0) + prob
            return
        target.reset()
        p = logits_to_probs(target.forward(prompt + prefix)[-1], temperature).double()
        for t in range(vocab):
            if p[t] > 0:
                walk(prefix + [t], prob * float(p[t]))

    walk([], 1.0)
    return dist


def chi_square(samples, exact, min_expected=5):
    """p-value of samples (tuples) against exact probabilities, pooling cells expected below min_expected."""
    n = len(samples)
    counts = {}
    for s in samples:
        counts[tuple(s)] = counts.get(tuple(s), 0) + 1
    unknown = set(counts) - set(exact)
    assert not unknown, f"outcomes AR can never produce: {sorted(unknown)[:5]}"
    obs, exp, pooled_o, pooled_e = [], [], 0, 0.0
    for k, p in exact.items():
        if p * n >= min_expected:
            obs.append(counts.get(k, 0))
            exp.append(p * n)
        else:
            pooled_o += counts.get(k, 0)
            pooled_e += p * n
    obs.append(pooled_o)
    exp.append(pooled_e)
    exp = np.array(exp) * (sum(obs) / sum(exp))
    return chisquare(obs, exp).pvalue


def sample_first_tokens(forward, prompt, n_samples, n=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_samples):
        toks = forward(prompt, n, Sampling(temperature=1.0), gen).token_ids
        out.append(tuple(toks))
    return out


def sampling_pvalue(forward, target, prompt, n_samples=20000, n=3):
    """Chi-square p-value of a method's sampled first n tokens against AR's exact distribution."""
    return chi_square(sample_first_tokens(forward, prompt, n_samples, n), exact_first_tokens(target, prompt, n))


def pit_pvalue(target, prompt, outputs, max_new_tokens, temperature=1.0, bins=20, seed=0):
    """p-value that sampled outputs follow AR's distribution at every position, however many rounds they
    took: each token becomes u = F(x - 1) + V p(x) under AR's conditional given its own prefix (V uniform),
    which is i.i.d. uniform exactly when every token was drawn from that conditional (the randomised
    probability integral transform). An output shorter than max_new_tokens stopped at EOS, drawn too."""
    rng = np.random.default_rng(seed)
    eos, us = target.eos_token_id, []
    for toks in outputs:
        drawn = list(toks) + ([eos] if len(toks) < max_new_tokens else [])
        target.reset()
        logits = target.forward(prompt + drawn)[len(prompt) - 1:len(prompt) - 1 + len(drawn)]
        probs = logits_to_probs(logits, temperature).double().numpy()
        for row, x in zip(probs, drawn):
            us.append(row[:x].sum() + rng.random() * row[x])
    counts, _ = np.histogram(np.clip(us, 0, 1), bins=bins, range=(0.0, 1.0))
    return chisquare(counts).pvalue, len(us)
