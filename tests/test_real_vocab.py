"""The real Llama tokenizers end to end: llama.cpp's reference tokenizations, stand-in models carrying them,
the converter, the chat templates and the upstream grid. Needs llama.cpp's vocabulary files
(../shared/data/vocab, or `python data/fetch_vocab.py`); skipped, saying so, without them."""
import os
import subprocess
import sys

import llama_cpp
import pytest
from transformers import AutoTokenizer

from src.backends.draft import Draft, VocabMismatchError, check_vocab
from src.eval.prompts import build_prompt
from src.eval.questions import questions_for
from src.tools.make_standins import STANDINS, make_standins, vocab_dir
from src.tools.vocab_tokenizer import hf_tokenizer, read_vocab, reference_cases
from src.utils import MODELS
from tests.conftest import ROOT, specbench

VOCAB = vocab_dir()
pytestmark = pytest.mark.skipif(VOCAB is None, reason="llama.cpp's vocabulary files not found: run "
                                "`python data/fetch_vocab.py` (or set VOCAB_DIR)")
SPM = VOCAB / "ggml-vocab-llama-spm.gguf" if VOCAB else None
BPE = VOCAB / "ggml-vocab-llama-bpe.gguf" if VOCAB else None


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    out = tmp_path_factory.mktemp("models")
    make_standins(out, SPM)
    return out


@pytest.fixture(scope="module")
def llama3_tokenizer():
    return hf_tokenizer(read_vocab(BPE))


def test_llama2_tokenizer_reproduces_every_reference():
    tok = hf_tokenizer(read_vocab(SPM))
    cases = reference_cases(SPM)
    assert len(cases) == 47 and len(tok) == 32000
    wrong = [t for t, ids in cases if tok(t, add_special_tokens=False)["input_ids"] != ids]
    assert not wrong, wrong
    assert tok("Hi")["input_ids"][0] == tok.bos_token_id == 1


def test_llama3_tokenizer_reproduces_every_reference(llama3_tokenizer):
    cases = reference_cases(BPE)
    assert len(cases) == 47 and len(llama3_tokenizer) == 128256
    wrong = [t for t, ids in cases if llama3_tokenizer(t, add_special_tokens=False)["input_ids"] != ids]
    assert not wrong, wrong
    assert llama3_tokenizer("Hi")["input_ids"][0] == 128000


def llama_cpp_ids(draft, text):
    data = text.encode()
    buf = (llama_cpp.llama_token * (len(data) + 8))()
    n = llama_cpp.llama_tokenize(draft.vocab, data, len(data), buf, len(buf), True, True)  # BOS, specials
    assert n >= 0
    return list(buf[:n])


def chat_prompts(template):
    """Every Spec-Bench and HumanEval prompt, MT-bench's second turns included (after a fixed answer)."""
    specbench()
    for q in questions_for("spec_bench") + questions_for("humaneval"):
        for n in range(1, len(q["turns"]) + 1):
            yield build_prompt(template, q["turns"][:n], ["Sure. Here is my answer."] * (n - 1))


def test_converted_draft_tokenizes_as_the_hf_tokenizer(standins):
    tok = AutoTokenizer.from_pretrained(standins / "vicuna-68m")
    draft = Draft(standins / "vicuna-68m-q5_k_m.gguf", n_ctx=512)  # the Q5_K_M conversion a user makes
    texts = [t for t, _ in reference_cases(SPM)]
    texts += list(chat_prompts("vicuna_v1.1")) + list(chat_prompts("llama-2"))
    assert len(texts) > 47 + 2 * (480 + 80 + 164) - 1
    wrong = [t for t in texts if llama_cpp_ids(draft, t) != tok(t)["input_ids"]]
    assert not wrong, f"{len(wrong)} texts differ, first: {wrong[0][:200]!r}"


def test_check_vocab_on_real_vocabularies(standins, llama3_tokenizer):
    draft = Draft(standins / "vicuna-68m-q5_k_m.gguf", n_ctx=256)
    check_vocab(draft, AutoTokenizer.from_pretrained(standins / "Llama-2-7b-chat-hf"))
    with pytest.raises(VocabMismatchError, match="vocabulary size 32000 != target tokenizer's 128256"):
        check_vocab(draft, llama3_tokenizer)


def test_templates_match_fschat_and_bos_once(standins):
    from fastchat.model import get_conversation_template
    for name, (folder, *_) in STANDINS.items():
        template = MODELS[name]["template"]
        conv = get_conversation_template(str(standins / folder))  # fschat's own choice for this model
        assert conv.name == template
        tok = AutoTokenizer.from_pretrained(standins / folder)
        turns, replies = ["What is 2 + 2?", "And times 3?"], ["It is 4."]
        for n in (1, 2):
            conv = get_conversation_template(str(standins / folder))
            for i in range(n):
                conv.append_message(conv.roles[0], turns[i])
                conv.append_message(conv.roles[1], replies[i] if i < n - 1 else None)
            ours = build_prompt(template, turns[:n], replies[:n - 1])
            assert ours == conv.get_prompt()
            ids = tok(ours)["input_ids"]
            assert ids == tok(conv.get_prompt())["input_ids"]
            assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id  # BOS once at the start
            assert ids.count(tok.bos_token_id) == (1 if n == 1 or template != "llama-2" else n)  # llama-2's sep2
        if template == "vicuna_v1.1":
            assert conv.system_message.startswith("A chat between a curious user")
        else:
            assert "[INST]" in ours and "[/INST]" in ours


@pytest.mark.slow
def test_upstream_grid_runs_on_the_standins(standins, tmp_path):
    # every script and method, on three benches: multi-turn (mt_bench), single-turn (qa), raw template (humaneval)
    benches = ["mt_bench", "qa", "humaneval"]
    env = {**os.environ, "DUODEC_MODELS_DIR": str(standins), "GRID_LIMIT": "1", "GRID_TOKENS": "16",
           "GRID_BENCHES": " ".join(benches),
           "GRID_WARMUP": "0", "GRID_OUT": str(tmp_path), "DRAFT_THREADS": "1", "PYTHON": sys.executable,
           "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    for script, labels in (("duodec_llama.sh", ("duodec", "pearl", "duodec-paper")),
                           ("baseline_llama.sh", ("sps", "pld", "lookahead", "rest"))):
        p = subprocess.run(["bash", f"cmds/{script}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
        assert p.returncode == 0, p.stderr[-3000:]
        for bench in benches:
            for label in ("ar", *labels):
                lines = (tmp_path / "llama-2-7b" / bench / f"{label}.jsonl").read_text().splitlines()
                assert len(lines) == 1
        assert p.stdout.count("speedup") == len(labels) * len(benches)  # a speed table per method and bench
