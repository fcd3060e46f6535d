"""Autoregressive decoding: one target forward per token. The baseline every method must match."""
from src.model.base import Clock, Method, finish
from src.verify import distributions, sample


def generate(target, prompt_ids, max_new_tokens, sampling, gen=None):
    """Also records, under greedy decoding, the target's top-2 logit gap at every token: where another
    method's answer first differs from AR's, the gap there tells a floating-point near-tie from a bug."""
    clock = Clock()
    logits = target.prefill(prompt_ids)
    tokens, gaps = [], []
    while True:
        tok = sample(distributions(logits[None], sampling.temperature, sampling.top_k, sampling.top_p)[0], gen)
        clock.gained([tok])
        tokens.append(tok)
        if sampling.greedy:
            top = logits.topk(2).values
            gaps.append(round(float(top[0] - top[1]), 5))
        if tok in target.stop_ids or len(tokens) >= max_new_tokens:
            break
        logits = target.forward([tok])[-1]
    out = finish(tokens, target.stop_ids, max_new_tokens, [1] * len(tokens), clock)
    if gaps:
        out.stats["top2_gap"] = gaps[:len(out.token_ids) + 1]
    return out


def make(args, target, draft=None):
    return Method(lambda prompt_ids, max_new_tokens, sampling, gen:
                  generate(target, prompt_ids, max_new_tokens, sampling, gen))
