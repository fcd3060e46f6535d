"""Lookahead decoding: its one-forward layout against the definition, the forward against separate ones, and
lossless decoding (greedy identical to AR; sampling by the chi-square test)."""
import argparse

import pytest
import torch
from hypothesis import given, settings, strategies as st

from src.backends.target import Target
from src.model import lookahead
from src.model.base import Sampling
from tests.lossless import ALPHA, PROMPTS, greedy_mismatches, sampling_pvalue


def shapes():
    """(prefix length, levels as token lists, trie parents)."""
    @st.composite
    def build(draw):
        w = draw(st.integers(1, 5))
        n_levels = draw(st.integers(1, 4))
        levels = [[7] * (w - 1)] + [[8] * w for _ in range(n_levels - 1)]
        parents = []
        for i in range(draw(st.integers(0, 8))):
            parents.append(draw(st.integers(-1, i - 1)))
        return draw(st.integers(0, 6)), levels, parents
    return build()


def by_definition(prefix, levels, parents):
    """Each token's position and the tokens it depends on, straight from the algorithm's definition: chain token j
    (the last token, then level 0) depends on the chain up to j; level l's token j on the chain up to j and on
    column j of levels 1..l; a trie node on the last token, its ancestors and itself. Returns (names in input
    order, {name: position}, {name: set of names it attends to})."""
    w = len(levels[0]) + 1
    names = [("c", j) for j in range(w)] + [(lv, j) for lv in range(1, len(levels)) for j in range(w)] + \
        [("t", i) for i in range(len(parents))]
    pos, deps = {}, {}
    for j in range(w):
        pos[("c", j)], deps[("c", j)] = j, {("c", k) for k in range(j + 1)}
    for lv in range(1, len(levels)):
        for j in range(w):
            pos[(lv, j)] = j + lv
            deps[(lv, j)] = {("c", k) for k in range(j + 1)} | {(b, j) for b in range(1, lv + 1)}
    for i, par in enumerate(parents):
        line, node = [i], par
        while node >= 0:
            line.append(node)
            node = parents[node]
        pos[("t", i)], deps[("t", i)] = len(line), {("c", 0)} | {("t", k) for k in line}
    return names, pos, deps


@given(shapes())
@settings(max_examples=200, deadline=None)
def test_layout_is_the_definition(shape):
    prefix, levels, parents = shape
    positions, mask = lookahead.layout(prefix, levels, parents)
    names, pos, deps = by_definition(prefix, levels, parents)
    assert positions == [prefix + pos[n] for n in names]
    assert mask.shape == (len(names), prefix + len(names)) and mask[:, :prefix].all()
    for row, n in enumerate(names):
        assert {names[k] for k in range(len(names)) if mask[row, prefix + k]} == deps[n], n
        # what it sees is one causal sequence: every position from the last token's up to its own, once
        assert sorted(pos[d] for d in deps[n]) == list(range(pos[n] + 1)), n


def test_one_forward_equals_separate_forwards(tiny):
    """fp32, tiny model: each token's logits in the combined forward are those of a plain forward over the prefix
    and the sequence it depends on."""
    target = Target(tiny["target"])
    prefix = target.tokenizer(PROMPTS[0])["input_ids"]
    levels = [[11, 12, 13], [21, 22, 23, 24], [31, 32, 33, 34]]
    parents = [-1, 0, 1, -1, 3, 0]
    tokens = [41, 42, 43, 51, 52, 61]
    last = 9
    target.reset()
    target.forward(prefix)
    positions, mask = lookahead.layout(len(prefix), levels, parents)
    inputs = [last] + [t for lv in levels for t in lv] + tokens
    together = target.forward(inputs, position_ids=positions, attention_mask=mask[None, None])
    names, pos, deps = by_definition(len(prefix), levels, parents)
    for row, n in enumerate(names):
        alone = [inputs[names.index(d)] for d in sorted(deps[n], key=pos.get)]
        target.reset()
        ref = target.forward(prefix + alone)[-1]
        assert torch.allclose(together[row], ref, atol=1e-4), (n, float((together[row] - ref).abs().max()))


@pytest.mark.parametrize("shape", [dict(), dict(level=3, window=2, guess=3), dict(level=4, window=5, guess=0)],
                         ids=["5-7-7 (upstream)", "3-2-3", "no guesses"])
def test_greedy_identical_to_ar(tiny, shape):
    target = Target(tiny["target"])
    fwd = lookahead.make(argparse.Namespace(**({"level": 5, "window": 7, "guess": 7} | shape)), target)
    prompts = [target.tokenizer(p)["input_ids"] for p in PROMPTS]
    outs = [fwd(p, 40, Sampling(), None) for p in prompts]
    greedy_mismatches(target, prompts, [o.token_ids for o in outs], 40, f"lookahead {shape}")
    assert all(sum(o.accept_lengths) == len(o.token_ids) for o in outs)
    for o in outs:  # where the time went: every forward fed the window's tokens, and the guesses on top
        st = o.stats
        assert st["forwards"] >= len(o.accept_lengths) and st["step_s"] > 0
        assert st["fed_tokens"] - st["guess_tokens"] >= st["forwards"] * min(shape.get("window", 7), 2)
        assert st["guess_tokens"] == 0 or shape.get("guess", 7) > 0
    if shape.get("guess", 7):
        assert max(a for o in outs for a in o.accept_lengths) > 1  # n-grams from the window and the prompt hold


@pytest.mark.slow
def test_sampling_matches_ar_distribution(tiny_vocab):
    target = Target(tiny_vocab["target"])
    fwd = lookahead.make(argparse.Namespace(level=3, window=3, guess=4), target)
    prompt = [1, 5, 6, 5, 6, 5]
    pval = sampling_pvalue(fwd, target, prompt, 8000, n=2)
    print(f"lookahead chi-square p = {pval:.3f}")
    assert pval > ALPHA
