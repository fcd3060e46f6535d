"""Quantized GGUF drafts load and decode on whatever CPU runs the tests (Intel with AMX, AMD, ...).

The demo target (d 256, trained) is the model: its projections are wide enough for the K-quants' 256-wide
blocks, and its logits are a real model's, so rounding shows as it would on a real draft.
"""
import gguf
import numpy as np
import pytest

from src.backends.draft import Draft, extra_buffer_types, use_repack
from src.tools.convert_to_gguf import QUANT_TYPES, convert, quantize
from src.utils import ROOT

DEMO = ROOT / "data/models/demo-target"
TEXT = "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n"
# the main weight type each file type must hold (llama.cpp's quantizer mixes types per tensor)
MAIN_TYPE = {"q8_0": "Q8_0", "q4_0": "Q4_0", "q4_k_m": "Q4_K", "q5_k_m": "Q5_K"}
# max |logit - f32 logit|: logits of this model span about +-20
TOL = {"q8_0": 0.5, "q4_0": 4.0, "q4_k_m": 3.0, "q5_k_m": 2.0}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("quant")
    f32 = convert(DEMO, d / "f32.gguf", "f32")
    from transformers import AutoTokenizer
    ids = AutoTokenizer.from_pretrained(DEMO)(TEXT)["input_ids"]
    return d, ids, Draft(f32, n_ctx=256).eval(ids, all_logits=True)


@pytest.mark.parametrize("dtype", list(QUANT_TYPES))
def test_quantized_draft_decodes_close_to_f32(reference, dtype):
    d, ids, ref = reference
    path = convert(DEMO, d / f"{dtype}.gguf", dtype)
    types = {t.tensor_type.name for t in gguf.GGUFReader(path).tensors}
    assert MAIN_TYPE[dtype] in types, types
    draft = Draft(path, n_ctx=256, n_seq=4)
    got = draft.eval(ids, all_logits=True)
    assert np.abs(got - ref).max() < TOL[dtype]
    assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.98
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.85
    # several sequences in one batch: branches after a shared prefix equal one-at-a-time decodes
    draft.rollback(10)
    for s in range(1, 4):
        draft.fork(0, s)
    batched = draft.decode([(ids[10 + s], s, True) for s in range(4)])
    for s in range(4):
        draft.clear()
        draft.eval(ids[:10])
        alone = draft.eval([ids[10 + s]])
        # batched and single-row matmuls take different kernels: equal up to activation rounding
        assert np.abs(batched[s] - alone).max() < 0.02 * np.abs(alone).max()
        assert batched[s].argmax() == alone.argmax()


@pytest.mark.parametrize("dtype", ["q8_0", "q5_k_m"])
def test_converter_quantizes_with_llama_cpp(reference, dtype):
    d = reference[0]
    f16 = convert(DEMO, d / "f16.gguf", "f16")
    by_hand = quantize(f16, d / f"{dtype}-from-f16.gguf", dtype)
    assert convert(DEMO, d / f"{dtype}-converter.gguf", dtype).read_bytes() == by_hand.read_bytes()


def test_repack_on_this_host(reference):
    """auto: repacking off for a quantized draft exactly where the CPU offers AMX; on for an f16 one."""
    d = reference[0]
    amx = "AMX" in extra_buffer_types()
    assert Draft(convert(DEMO, d / "policy-q4_0.gguf", "q4_0"), n_ctx=64).repack is not amx
    assert Draft(convert(DEMO, d / "policy-f16.gguf", "f16"), n_ctx=64).repack is True
    assert Draft(d / "policy-q4_0.gguf", n_ctx=64, repack="off").repack is False


def test_repack_policy():
    assert use_repack("on", ["AMX"]) and not use_repack("off", ["CPU_REPACK"])
    assert use_repack("auto", ["CPU_REPACK"]) and use_repack("auto", [])
    assert not use_repack("auto", ["AMX", "CPU_REPACK"])
    names = extra_buffer_types()  # this host's, whatever they are
    assert isinstance(names, list) and all(isinstance(n, str) and n for n in names)
