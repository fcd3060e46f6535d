import torch

from src.backends.target import Target
from src.model.autoregressive import generate
from src.model.base import Sampling

PROMPTS = ["def add(a, b):\n", "class Point:\n", "for i in range(10):\n"]


def test_greedy_equals_hf_generate(tiny):
    t = Target(tiny["target"])
    for p in PROMPTS:
        ids = t.tokenizer(p)["input_ids"]
        out = generate(t, ids, 40, Sampling())
        ref = t.model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=40, eos_token_id=2,
                               pad_token_id=2)[0, len(ids):].tolist()
        if 2 in ref:
            ref = ref[:ref.index(2)]
        assert out.token_ids == ref
        assert out.ttft > 0 and len(out.accept_lengths) >= len(out.token_ids)


def test_sampling_reproducible(tiny):
    t = Target(tiny["target"])
    ids = t.tokenizer(PROMPTS[0])["input_ids"]
    s = Sampling(temperature=1.0, top_k=50, top_p=0.9)
    a = generate(t, ids, 30, s, torch.Generator().manual_seed(7)).token_ids
    b = generate(t, ids, 30, s, torch.Generator().manual_seed(7)).token_ids
    c = generate(t, ids, 30, s, torch.Generator().manual_seed(8)).token_ids
    assert a == b and a != c
