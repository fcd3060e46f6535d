"""Verification and sampling math shared by every method: pure functions on probability tensors.

Greedy decoding is the special case temperature = 0. There `distributions` gives each row as its
certain token, an int, which every rule below treats as the one-hot row on it (tested against the
one-hot rows themselves): it then accepts exactly the tokens that equal the target's argmax, with no
tensor built or walked per token.
"""
import torch


def logits_to_probs(logits, temperature=0.0, top_k=0, top_p=1.0):
    """Next-token distributions (rows of `logits`) after temperature, top-k and top-p."""
    logits = logits.float()
    if temperature <= 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, -1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(-1, descending=True)
        # drop a token when the tokens ranked above it already reach top_p
        drop = (sorted_p.cumsum(-1) - sorted_p) >= top_p
        probs = probs.scatter(-1, order, sorted_p.masked_fill(drop, 0.0))
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def distributions(logits, temperature=0.0, top_k=0, top_p=1.0):
    """The rows the rules below take: probability rows, or under greedy decoding each row's argmax."""
    if temperature <= 0:
        return logits.argmax(-1).tolist()
    return logits_to_probs(logits, temperature, top_k, top_p)


def sample(probs, gen=None):
    if isinstance(probs, int):  # a certain token (greedy)
        return probs
    return int(torch.multinomial(probs.float(), 1, generator=gen).item())


def uniform(gen=None):
    return float(torch.rand((), generator=gen, device=gen.device if gen is not None else "cpu").item())


def rejection_step(p, q):
    """Leviathan et al.: a token x drafted by sampling q is accepted with min(1, p(x)/q(x));
    on rejection the target samples from normalise(max(0, p - q)). Returns (accept, residual)."""
    accept = torch.where(q > 0, (p / q.clamp_min(1e-30)).clamp(max=1.0), torch.zeros_like(p))
    residual = (p - q).clamp_min(0)
    mass = residual.sum()
    return accept, (residual / mass if mass > 0 else p)


def sibling_step(p, siblings):
    """Siblings tried in order by recursive rejection (SpecInfer's multi-step speculative sampling): sibling i is
    (token x_i, q_i), x_i drawn from q_i given the siblings before it (i.i.d. or without replacement), or q_i None
    for a deterministic candidate (the point mass on x_i). x_i is accepted with min(1, r_i(x_i) / q_i(x_i)), where
    r_1 = p and r_{i+1} = normalise(max(0, r_i - q_i)); after the last, the residual remains. Returns (each
    sibling's acceptance probability given the earlier were rejected, residual). The output is then distributed
    exactly as p. For deterministic candidates this is trying each with its share of what the earlier left."""
    residual, accept = p, []
    for tok, q in siblings:
        if q is None:
            q = torch.zeros_like(p)
            q[tok] = 1
        a, residual = rejection_step(residual, q)
        accept.append(float(a[tok]))
    return accept, residual


def candidate_step(p, candidates):
    """Deterministic sibling candidates c1, c2, ... tried in order (sibling_step): c_i is accepted with its
    probability under p with the earlier candidates removed and renormalised."""
    return sibling_step(p, [(c, None) for c in candidates])


def accept_siblings(p, siblings, gen=None):
    """Try siblings (token, q or None; see sibling_step) against p; return (index of the accepted one or None,
    next token)."""
    tokens = [t for t, _ in siblings]
    if isinstance(p, int):  # certain: the sibling equal to it, if any, is accepted
        return (tokens.index(p) if p in tokens else None), p
    accept, residual = sibling_step(p, siblings)
    for i, a in enumerate(accept):
        if uniform(gen) < a:
            return i, tokens[i]
    return None, sample(residual, gen)


def accept_candidates(p, candidates, gen=None):
    """Try deterministic candidates against p; return (index of the accepted one or None, next token)."""
    return accept_siblings(p, [(c, None) for c in candidates], gen)


def verify_chain(draft_tokens, p_rows, gen=None, q_rows=None):
    """Verify a drafted chain. p_rows[i] is the target's distribution for draft position i (one more row
    than tokens, for the bonus token). q_rows[i]: the distribution token i was drawn from (rejection rule),
    or None where it is a deterministic candidate (a chain may mix the two: each position's test is exact
    given the tokens before it). Returns (number accepted, next token)."""
    for i, tok in enumerate(draft_tokens):
        hit, nxt = accept_siblings(p_rows[i], [(tok, q_rows[i] if q_rows is not None else None)], gen)
        if hit is None:
            return i, nxt
    return len(draft_tokens), sample(p_rows[len(draft_tokens)], gen)


def verify_tree(tokens, parents, root_p, node_p, gen=None):
    """Walk a tree of deterministic candidates. `parents[i]` is -1 for children of the root. `root_p` is the
    target's distribution after the verified prefix, `node_p[i]` after node i; each node's children are tried in
    turn (candidate_step). Returns (accepted path as node indices, next token)."""
    children = {}
    for i, par in enumerate(parents):
        children.setdefault(par, []).append(i)
    path, node, p = [], -1, root_p
    while True:
        kids = children.get(node, [])
        hit, nxt = accept_candidates(p, [tokens[k] for k in kids], gen)
        if hit is None:
            return path, nxt
        node = kids[hit]
        path.append(node)
        p = node_p[node]
