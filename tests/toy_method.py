"""A toy method for the add-a-method test: draft = the last token, three times."""
from src.model.base import Method, speculative_loop


def make(args, target, draft=None):
    def forward(prompt_ids, max_new_tokens, sampling, gen):
        return speculative_loop(target, prompt_ids, max_new_tokens, sampling, gen,
                                lambda seq, budget: ([seq[-1]] * min(3, budget), None))
    return Method(forward, {"toy": "repeat-last"})
