"""The verification math as pure functions: exact output distributions by enumeration."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from src.verify import (accept_candidates, candidate_step, distributions as rows_of, logits_to_probs, rejection_step,
                        sample, sibling_step, verify_chain, verify_tree)
from tests.lossless import ALPHA

V = 6


def dist(draw, zeros=True):
    w = draw(st.lists(st.floats(0.0 if zeros else 0.01, 1.0), min_size=V, max_size=V))
    w = torch.tensor(w, dtype=torch.float64)
    if w.sum() == 0:
        w[0] = 1.0
    return w / w.sum()


@st.composite
def distributions(draw):
    return dist(draw)


@given(distributions(), st.lists(st.integers(0, V - 1), max_size=V + 2))
@settings(max_examples=300, deadline=None)
def test_candidates_leave_the_target_distribution_unchanged(p, cands):
    accept, residual = candidate_step(p, cands)
    out, reach = torch.zeros(V, dtype=torch.float64), 1.0  # reach: probability all earlier were rejected
    for c, a in zip(cands, accept):
        assert 0.0 <= a <= 1.0 + 1e-12
        out[c] += reach * a
        reach *= 1 - a
    out += reach * residual
    assert torch.allclose(out, p, atol=1e-9)


@given(distributions(), distributions())
@settings(max_examples=300, deadline=None)
def test_rejection_sampling_recovers_the_target(p, q):
    accept, residual = rejection_step(p, q)
    out = q * accept + (1 - (q * accept).sum()) * residual
    assert torch.allclose(out, p, atol=1e-9)


def without(q, drawn):
    """q with the tokens already drawn removed and renormalised: the next draw's distribution without replacement
    (None when nothing is left)."""
    q = q.clone()
    q[list(drawn)] = 0
    return q / q.sum() if q.sum() > 0 else None


def sibling_law(p, kinds, q, drawn=()):
    """The exact output distribution of sibling_step's rule, summed over every way the drawn siblings could have
    been drawn (enumerated): kinds[i] is "iid" (drawn from q), "wor" (from q without the earlier draws) or a
    token (a deterministic candidate)."""
    if len(drawn) == len(kinds):
        siblings = []
        for i, (kind, tok) in enumerate(zip(kinds, drawn)):
            siblings.append((tok, None if isinstance(kind, int) else
                             q if kind == "iid" else without(q, [t for k, t in zip(kinds[:i], drawn) if k == "wor"])))
        accept, residual = sibling_step(p, siblings)
        out, reach = torch.zeros(V, dtype=torch.float64), 1.0
        for (tok, _), a in zip(siblings, accept):
            assert -1e-12 <= a <= 1.0 + 1e-12
            out[tok] += reach * a
            reach *= 1 - a
        return out + reach * residual
    kind = kinds[len(drawn)]
    if isinstance(kind, int):
        return sibling_law(p, kinds, q, drawn + (kind,))
    row = q if kind == "iid" else without(q, [t for k, t in zip(kinds, drawn) if k == "wor"])
    return sum(row[t] * sibling_law(p, kinds, q, drawn + (t,)) for t in range(V) if row[t] > 0)


@given(distributions(), distributions(),
       st.lists(st.one_of(st.sampled_from(["iid", "wor"]), st.integers(0, V - 1)), min_size=1, max_size=3))
@settings(max_examples=60, deadline=None)
def test_recursive_rejection_over_siblings_leaves_the_target_distribution_unchanged(p, q, kinds):
    """Siblings drawn from q (with or without replacement) and deterministic ones, in any order: the output,
    summed exactly over the draws, is p."""
    if sum(k == "wor" for k in kinds) > int((q > 0).sum()):
        kinds = [k if k != "wor" else "iid" for k in kinds]  # cannot draw more distinct tokens than q holds
    assert torch.allclose(sibling_law(p, kinds, q), p, atol=1e-9)


@given(distributions(), distributions())
@settings(max_examples=100, deadline=None)
def test_one_drawn_sibling_is_the_rejection_rule(p, q):
    for tok in range(V):
        if q[tok] > 0:
            accept, residual = sibling_step(p, [(tok, q)])
            a, r = rejection_step(p, q)
            assert accept == [float(a[tok])] and torch.equal(residual, r)


def test_drawn_siblings_gain_more_than_one_draw_when_the_draft_is_close():
    """Why draw several: against a draft near the target, three draws without replacement accept more often than
    one (the acceptance is the mass of the output that came from a sibling)."""
    p = torch.tensor([0.3, 0.25, 0.2, 0.15, 0.1, 0.0], dtype=torch.float64)
    q = torch.tensor([0.1, 0.2, 0.3, 0.2, 0.1, 0.1], dtype=torch.float64)
    def acceptance(kinds, drawn=()):
        if len(drawn) == len(kinds):
            siblings = [(t, without(q, drawn[:i])) for i, t in enumerate(drawn)]
            reach = 1.0
            for a in sibling_step(p, siblings)[0]:
                reach *= 1 - a
            return 1 - reach
        row = without(q, drawn)
        return sum(row[t] * acceptance(kinds, drawn + (t,)) for t in range(V) if row[t] > 0)
    one, three = acceptance(["wor"]), acceptance(["wor"] * 3)
    assert one == pytest.approx(float(torch.minimum(p, q).sum()))
    assert three > one + 0.1  # 0.86 against 0.75


@given(st.lists(st.integers(0, V - 1), min_size=1, max_size=5), st.data())
@settings(max_examples=200, deadline=None)
def test_greedy_chain_accepts_the_argmax_prefix(draft, data):
    logits = torch.tensor(data.draw(st.lists(st.lists(st.floats(-5, 5), min_size=V, max_size=V),
                                             min_size=len(draft) + 1, max_size=len(draft) + 1)))
    p = logits_to_probs(logits)
    n, nxt = verify_chain(draft, p)
    argmax = logits.argmax(-1).tolist()
    expect = next((i for i, t in enumerate(draft) if t != argmax[i]), len(draft))
    assert n == expect and nxt == argmax[expect]
    # sampled drafts with one-hot q reduce to the same rule
    q = torch.nn.functional.one_hot(torch.tensor(draft), V).double()
    assert verify_chain(draft, p, q_rows=q) == (n, nxt)


@given(st.lists(st.integers(0, V - 1), max_size=V + 1), st.data())
@settings(max_examples=300, deadline=None)
def test_greedy_rows_as_tokens_act_as_one_hot_rows(draft, data):
    """Greedy rows given as their argmax tokens (no tensor per token) decide exactly as the one-hot rows,
    for chains, candidate lists and trees, ties in the logits included."""
    n_rows = len(draft) + 1
    logits = torch.tensor(data.draw(st.lists(st.lists(st.sampled_from([-1.0, 0.0, 0.5, 2.0]), min_size=V, max_size=V),
                                             min_size=n_rows, max_size=n_rows)))
    one_hot, tokens = logits_to_probs(logits), rows_of(logits)
    assert tokens == [int(t) for t in one_hot.argmax(-1)] and all(isinstance(t, int) for t in tokens)
    assert verify_chain(draft, tokens) == verify_chain(draft, one_hot)
    assert accept_candidates(tokens[0], draft) == accept_candidates(one_hot[0], draft)
    assert sample(tokens[0]) == sample(one_hot[0])
    parents = [data.draw(st.integers(-1, i - 1)) for i in range(len(draft))]
    assert verify_tree(draft, parents, tokens[0], tokens[1:]) == verify_tree(draft, parents, one_hot[0], one_hot[1:])


def test_greedy_tree_takes_the_argmax_path():
    root = torch.tensor([0.0, 3.0, 1.0, 0, 0, 0])       # argmax 1
    node = torch.tensor([[0, 0, 0, 0, 5.0, 0],            # node 0 (token 2): never reached
                         [0, 0, 0, 4.0, 0, 0],            # node 1 (token 1): argmax 3
                         [0, 0, 0, 0, 0, 9.0],            # node 2 (token 3, child of 1): argmax 5
                         [1.0, 0, 0, 0, 0, 0]])           # node 3 (token 4, child of 1)
    path, nxt = verify_tree([2, 1, 3, 4], [-1, -1, 1, 1], logits_to_probs(root), logits_to_probs(node))
    assert path == [1, 2] and nxt == 5


def test_sampled_tree_is_exact_by_monte_carlo():
    torch.manual_seed(0)
    root = torch.tensor([0.5, 0.3, 0.2])
    node = torch.tensor([[0.1, 0.1, 0.8], [0.6, 0.2, 0.2]])
    gen = torch.Generator().manual_seed(1)
    counts = torch.zeros(3)
    for _ in range(20000):
        path, nxt = verify_tree([0, 1], [-1, -1], root, node, gen)
        counts[[0, 1][path[0]] if path else nxt] += 1
    assert torch.allclose(counts / counts.sum(), root.float(), atol=0.015)


def test_top_k_top_p():
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0])
    assert (logits_to_probs(logits, 1.0, top_k=2)[2:] == 0).all()
    p = logits_to_probs(logits, 1.0, top_p=0.7)
    assert p[0] > 0 and p[1] > 0 and (p[2:] == 0).all() and abs(p.sum() - 1) < 1e-6


@given(st.lists(st.integers(0, V - 1), min_size=1, max_size=4), st.data())
@settings(max_examples=100, deadline=None)
def test_a_none_draw_row_is_a_deterministic_candidate(chain, data):
    """q_rows with None at every position verify as no q_rows at all, draw for draw."""
    p_rows = [dist(data.draw) for _ in range(len(chain) + 1)]
    seed = data.draw(st.integers(0, 2 ** 31))
    a = verify_chain(chain, p_rows, torch.Generator().manual_seed(seed), None)
    b = verify_chain(chain, p_rows, torch.Generator().manual_seed(seed), [None] * len(chain))
    assert a == b


def test_chain_of_drawn_and_deterministic_tokens_is_exact_by_monte_carlo():
    """A chain whose first token is drawn from q (rejection rule) and whose second is deterministic given the
    first (candidate rule): the first two output tokens follow the target's joint distribution."""
    from scipy.stats import chisquare
    p0, q0 = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    p1 = torch.tensor([[0.1, 0.1, 0.8], [0.6, 0.2, 0.2], [0.3, 0.3, 0.4]], dtype=torch.float64)  # after each first
    gen, draft_gen = torch.Generator().manual_seed(2), torch.Generator().manual_seed(3)
    counts = torch.zeros(3, 3)
    for _ in range(20000):
        t0 = sample(q0, draft_gen)
        chain = [t0, (t0 + 1) % 3]
        n, nxt = verify_chain(chain, [p0, p1[t0], torch.ones(3, dtype=torch.float64) / 3], gen, [q0, None])
        first, second = (nxt, sample(p1[nxt], gen)) if n == 0 else (t0, nxt if n == 1 else chain[1])
        counts[first, second] += 1
    expected = (p0[:, None] * p1).flatten() * counts.sum().item()
    assert chisquare(counts.flatten().double().numpy(), expected.numpy()).pvalue > ALPHA
