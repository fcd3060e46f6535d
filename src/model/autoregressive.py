"""Autoregressive decoding: one target forward per token. The baseline every method must match."""
from src.model.base import Clock, finish
from src.verify import distributions, sample


def generate(target, prompt_ids, max_new_tokens, sampling, gen=None):
    clock = Clock()
    logits = target.prefill(prompt_ids)
    tokens = []
    while True:
        tok = sample(distributions(logits[None], sampling.temperature, sampling.top_k, sampling.top_p)[0], gen)
        clock.first_token()
        tokens.append(tok)
        if tok == target.eos_token_id or len(tokens) >= max_new_tokens:
            break
        logits = target.forward([tok])[-1]
    return finish(tokens, target.eos_token_id, max_new_tokens, [1] * len(tokens), clock)


def make(args, target, draft=None):
    return lambda prompt_ids, max_new_tokens, sampling, gen: generate(target, prompt_ids, max_new_tokens, sampling, gen)
