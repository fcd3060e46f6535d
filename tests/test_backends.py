import numpy as np
import pytest
import torch

from src.backends.draft import Draft, DraftLoadError, VocabMismatchError, check_vocab
from src.backends.target import ModelLoadError, Target
from src.tools.convert_to_gguf import convert
from src.utils import ModelNotFound, resolve
from tests.conftest import byte_bpe, make_llama

TEXT = "def add(a, b):\n    return a + b\nclass Point:\n"


def test_gguf_logits_match_hf(tiny):
    hf = Target(tiny["target"])
    ids = hf.tokenizer(TEXT)["input_ids"]
    hf.reset()
    ref = hf.forward(ids).numpy()
    d = Draft(str(tiny["target"]) + ".gguf", n_ctx=256)
    got = d.eval(ids, all_logits=True)
    assert np.abs(ref - got).max() <= 1e-3
    assert (ref.argmax(-1) == got.argmax(-1)).all()


def test_gguf_tokenizer_same_ids(tiny):
    import llama_cpp
    hf = Target(tiny["target"])
    d = Draft(str(tiny["target"]) + ".gguf", n_ctx=256)
    text = TEXT.encode()
    buf = (llama_cpp.llama_token * 256)()
    n = llama_cpp.llama_tokenize(d.vocab, text, len(text), buf, 256, True, False)
    assert list(buf[:n]) == hf.tokenizer(TEXT)["input_ids"]


@pytest.mark.parametrize("dtype,tol", [("f16", 0.1), ("q8_0", 1.0)])
def test_gguf_quantised_close(tiny, tmp_path, dtype, tol):
    out = convert(tiny["target"], tmp_path / f"m-{dtype}.gguf", dtype)
    hf = Target(tiny["target"])
    ids = hf.tokenizer(TEXT)["input_ids"]
    hf.reset()
    ref = hf.forward(ids).numpy()
    got = Draft(out, n_ctx=256).eval(ids, all_logits=True)
    assert np.abs(ref - got).max() < tol  # weight (and, for q8_0, activation) rounding; logits are O(1)
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.995  # a layout error would decorrelate
    assert (ref.argmax(-1) == got.argmax(-1)).mean() >= 0.9


def test_draft_rollback_and_batched_sequences(tiny):
    d = Draft(str(tiny["draft"]) + ".gguf", n_ctx=256, n_seq=4)
    ids = Target(tiny["draft"]).tokenizer(TEXT)["input_ids"]
    full = d.eval(ids, all_logits=True)
    d.rollback(5)
    assert d.lengths[0] == 5
    again = d.eval(ids[5:8])
    assert np.allclose(again, full[7], atol=1e-5)
    # two branches decoded in one llama_decode equal separate decodes
    d.rollback(5)
    d.fork(0, 1)
    both = d.decode([(ids[5], 0, True), (ids[9], 1, True)])
    d.clear()
    d.eval(ids[:5])
    alone = d.eval([ids[9]])
    assert np.allclose(both[1], alone, atol=1e-5)
    assert np.allclose(both[0], full[5], atol=1e-5)


def test_target_rollback_and_tree(tiny):
    t = Target(tiny["target"])
    ids = t.tokenizer(TEXT)["input_ids"]
    t.reset()
    full = t.forward(ids)
    t.rollback(6)
    assert t.length == 6
    assert torch.allclose(t.forward(ids[6:9]), full[6:9], atol=1e-4)
    # a tree: two branches after the prefix of 6 tokens
    t.rollback(6)
    tokens, parents = [ids[6], ids[7], 5, 9], [-1, 0, -1, 2]
    tree = t.verify_tree(tokens, parents)
    assert torch.allclose(tree[:2], full[6:8], atol=1e-4)
    t.keep_path(6, [2, 3])  # keep the second branch
    t2 = Target(tiny["target"])
    t2.reset()
    seq = t2.forward(ids[:6] + [5, 9])
    assert torch.allclose(tree[2:], seq[6:], atol=1e-4)
    assert torch.allclose(t.forward([7]), t2.forward([7]), atol=1e-4)


def test_vocab_mismatch_is_refused(tiny, tmp_path):
    other = make_llama(tmp_path / "other", byte_bpe(280), 5)
    d = Draft(str(other) + ".gguf", n_ctx=128)
    with pytest.raises(VocabMismatchError, match="vocabulary size"):
        check_vocab(d, Target(tiny["target"]).tokenizer)
    check_vocab(Draft(str(tiny["draft"]) + ".gguf", n_ctx=128), Target(tiny["target"]).tokenizer)


def test_missing_and_corrupt_models(tmp_path):
    with pytest.raises(ModelNotFound, match="src/utils.py"):
        resolve("llama-2-7b")
    with pytest.raises(ModelNotFound, match="neither a registered"):
        resolve(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError, match="config.json"):
        Target(tmp_path)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(DraftLoadError, match="could not load"):
        Draft(bad)
    with pytest.raises(DraftLoadError, match="not found"):
        Draft(tmp_path / "missing.gguf")


def test_env_override(tiny, monkeypatch):
    monkeypatch.setenv("DUODEC_MODEL_LLAMA_2_7B", str(tiny["target"]))
    path, entry = resolve("llama-2-7b")
    assert path == tiny["target"] and entry["template"] == "llama-2"
