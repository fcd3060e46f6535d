"""SpS, PLD and REST are lossless: greedy equals AR (tie rule), sampling matches AR's distribution (chi-square)."""
import argparse

import pytest
from hypothesis import given, settings, strategies as st

from src.backends.draft import Draft
from src.backends.target import Target
from src.model import pld, rest, sps
from src.model.base import Sampling, common_prefix
from src.tools.build_rest_datastore import build
from tests.lossless import ALPHA, PROMPTS, chi_square, exact_first_tokens, greedy_mismatches, sample_first_tokens, \
    sampling_pvalue

N_NEW = 64


def args(**kw):
    base = dict(gamma=5, max_ngram=3, min_ngram=1, num_pred=10, datastore=None, max_span=16, min_span=2,
                num_draft=64, target="x")
    base.update(kw)
    return argparse.Namespace(**base)


def greedy_prompts(target):
    """Half the prompts as they are; half followed by the target's own continuation and the prompt again,
    as in code edits, where prompt lookup finds what comes next."""
    from src.model.autoregressive import generate
    out = []
    for i, p in enumerate(PROMPTS):
        ids = target.tokenizer(p)["input_ids"]
        if i % 2:
            ids = ids + generate(target, ids, 24, Sampling()).token_ids + ids[1:]
        out.append(ids)
    return out


@pytest.fixture(scope="module")
def datastore(tiny, tmp_path_factory):
    """Retrieval data: the target's greedy continuations of every third prompt, so some drafts hit."""
    from src.model.autoregressive import generate
    t = Target(tiny["target"])
    texts = [t.tokenizer.decode(generate(t, ids, 96, Sampling()).token_ids) for ids in greedy_prompts(t)[::3]]
    out = tmp_path_factory.mktemp("rest") / "store.idx"
    build(texts, t.tokenizer, out)
    return out


def methods(tiny, datastore, target):
    hf_draft = Target(tiny["draft"])
    gguf_draft = Draft(str(tiny["draft"]) + ".gguf", n_ctx=512)
    same_draft = Draft(str(tiny["target"]) + ".gguf", n_ctx=512)  # agrees with the target: long accepts
    return {
        "sps-hf": sps.make(args(), target, hf_draft),
        "sps-gguf": sps.make(args(), target, gguf_draft),
        "sps-gguf-same": sps.make(args(gamma=7), target, same_draft),
        "pld": pld.make(args(), target),
        "rest": rest.make(args(datastore=datastore), target),
    }


def test_greedy_identical_to_ar(tiny, datastore):
    target = Target(tiny["target"])
    prompts = greedy_prompts(target)
    for name, fwd in methods(tiny, datastore, target).items():
        outs, accepted = [], []
        for p in prompts:
            g = fwd(p, N_NEW, Sampling(), None)
            outs.append(g.token_ids)
            accepted += g.accept_lengths
            assert sum(g.accept_lengths) >= len(g.token_ids)
        allowed = greedy_mismatches(target, prompts, outs, N_NEW, name)
        print(f"{name}: mean accepted {sum(accepted) / len(accepted):.2f}, tie divergences {allowed}")
        if name != "sps-gguf":
            assert max(accepted) > 1, f"{name} never accepted a draft token: the test would prove nothing"


def test_rest_tree_logits_equal_sequence(tiny):
    t = Target(tiny["target"])
    ids = t.tokenizer("def add(a, b):\n")["input_ids"]
    tokens, parents = rest.build_tree([[5, 6, 7], [5, 8], [9]], 64)
    assert tokens == [5, 6, 7, 8, 9] and parents == [-1, 0, 1, 0, -1]
    t.reset()
    t.forward(ids[:-1])
    tree = t.verify_tree([ids[-1]] + tokens, [-1, 0, 1, 2, 1, 0])
    for branch, rows in (([5, 6, 7], [0, 1, 2, 3]), ([5, 8], [0, 1, 4]), ([9], [0, 5])):
        t.reset()
        seq = t.forward(ids + branch)[len(ids) - 1:]
        assert (tree[rows] - seq).abs().max() < 1e-4


@given(st.lists(st.integers(0, 2), max_size=40), st.lists(st.integers(0, 2), max_size=40), st.integers(0, 40))
@settings(max_examples=500, deadline=None)
def test_common_prefix_by_bisection_finds_the_first_difference(a, b, shared):
    b = a[:shared] + b  # usually a long shared prefix, as between a cache and the next context
    n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    assert common_prefix(a, b) == common_prefix(tuple(a), b) == n


def scan_lookup(seq, max_ngram, min_ngram, num_pred, tail=()):
    """PLD's lookup as its reference implementation states it: the tokens after the first earlier occurrence
    of the last n tokens, longest n first; with a tail (a pending draft), its last n tokens after an occurrence
    within seq."""
    whole = list(seq) + list(tail)
    for n in range(max_ngram, min_ngram - 1, -1):
        for i in range(len(seq) - n):
            if len(whole) > n and whole[i:i + n] == whole[-n:]:
                return whole[i + n:i + n + num_pred]
    return []


@given(st.lists(st.lists(st.integers(0, 3), max_size=6), min_size=1, max_size=12), st.integers(1, 3),
       st.integers(1, 4))
@settings(max_examples=300, deadline=None)
def test_ngram_index_finds_what_a_scan_finds(chunks, max_ngram, num_pred):
    """Grown a few tokens a round, as a decode loop grows it (and restarted on a new sequence), the index
    answers what scanning the whole sequence answers, and after a tail (the next chunk, as a pending draft) what
    scanning the indexed part for the tail's last n-gram answers."""
    index, seq = pld.NgramIndex(max_ngram, 1), []
    for i, chunk in enumerate(chunks):
        seq = chunk if i == len(chunks) // 2 else seq + chunk  # halfway: a new prompt
        assert index.lookup(seq, num_pred) == scan_lookup(seq, max_ngram, 1, num_pred), seq
        tail = chunks[(i + 1) % len(chunks)]
        assert index.lookup(seq, num_pred, tail) == scan_lookup(seq, max_ngram, 1, num_pred, tail), (seq, tail)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sps", "pld", "rest"])
def test_sampling_matches_ar_distribution(tiny_vocab, tmp_path, name):
    target = Target(tiny_vocab["target"])
    prompt = [1, 5, 6]
    if name == "sps":
        fwd = sps.make(args(gamma=3), target, Target(tiny_vocab["draft"]))
    elif name == "pld":
        fwd = pld.make(args(), target)
        prompt = [1, 5, 6, 7, 5, 6, 8, 5, 6]  # repeats, so lookups propose tokens
    else:
        store = tmp_path / "s.idx"
        import draftretriever
        w = draftretriever.Writer(file_path=str(store), vocab_size=16)
        w.add_entry([5, 6, 7, 8, 5, 6, 9, 10, 5, 6, 7, 3, 6, 7, 8])
        w.finalize()
        fwd = rest.make(args(datastore=store), target)
        prompt = [1, 5, 6]
    exact = exact_first_tokens(target, prompt)
    samples = sample_first_tokens(fwd, prompt, 20000)
    pval = chi_square(samples, exact)
    print(f"{name}: chi-square p = {pval:.3f}")
    assert pval > ALPHA


def test_sampling_small_exact_check(tiny_vocab):
    """The quick tier's sampling check: PLD's looked-up candidates (the deterministic-candidate rule), 1000 answers
    of 2 tokens from the 16-token model, against AR's exact distribution (the slow tier runs every method at
    20000)."""
    target = Target(tiny_vocab["target"])
    fwd = pld.make(args(), target)
    prompt = [1, 5, 6, 7, 5, 6, 8, 5, 6]  # repeats, so lookups propose tokens
    pval = sampling_pvalue(fwd, target, prompt, 1000, n=2)
    assert pval > ALPHA, pval
