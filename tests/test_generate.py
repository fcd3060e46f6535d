"""src.generate: one prompt or a chat, streamed round by round, identical to AR under greedy decoding."""
import subprocess
import sys
import time

import pytest

from src.generate import Generator
from tests.conftest import ROOT
from tests.lossless import ar_reference


@pytest.mark.parametrize("method", ["sps", "duodec", "ar"])
def test_reply_streams_each_round_and_matches_ar(tiny, method):
    target = tiny["target"]
    gen = Generator(method=method, target=target, draft=None if method == "ar" else f"{tiny['draft']}.gguf",
                    template="raw", max_new_tokens=40, cores="shared")
    pieces, done = [], None
    try:
        out = gen.reply(["def f(x):\n"], on_text=lambda piece: pieces.append((piece, time.perf_counter())))
        done = time.perf_counter()
        ids = gen.target.tokenizer("def f(x):\n")["input_ids"]
        assert out.token_ids == ar_reference(gen.target, ids, 40)
    finally:
        gen.close()
    assert "".join(p for p, _ in pieces) == out.text
    # the text came in pieces, round by round, the first well before the answer was done
    assert len(pieces) >= 3 and pieces[0][1] < pieces[-1][1] <= done
    assert "tokens per forward" in out.summary()


def test_cli_prompt_and_chat(tiny):
    common = ["--target", tiny["target"], "--method", "sps", "--draft", f"{tiny['draft']}.gguf", "--template", "raw",
              "--max-new-tokens", "12"]
    one = subprocess.run([sys.executable, "-m", "src.generate", *map(str, common), "def f(x):\n"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    assert one.stdout.strip() and "tokens/s" in one.stderr and "tokens per forward" in one.stderr
    chat = subprocess.run([sys.executable, "-m", "src.generate", *map(str, common), "--chat"], cwd=ROOT,
                          input="def f(x):\nclass A:\n\n", capture_output=True, text=True, timeout=300)
    assert chat.returncode == 0, chat.stderr[-2000:]
    assert chat.stderr.count("tokens per forward") == 2
    none = subprocess.run([sys.executable, "-m", "src.generate", *map(str, common)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert none.returncode == 2 and "give a prompt, or --chat" in none.stderr
