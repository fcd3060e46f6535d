"""Twins compute their source's function at a larger shape (CPU, small shapes); named shapes by arithmetic."""
import numpy as np
import pytest
import torch
from transformers import AutoConfig

from src.backends.draft import Draft
from src.backends.target import Target
from src.backends.twin import REFERENCE_PARAMS, SHAPES, param_count, twin_config
from src.model.autoregressive import generate
from src.model.base import Sampling
from src.tools.convert_to_gguf import convert
from src.tools.make_twin import main as make_twin_main
from src.utils import ROOT
from tests.lossless import PROMPTS

DEMO = ROOT / "data/models"


def test_target_twin_computes_the_source_function():
    src = Target(DEMO / "demo-target")
    twin = Target(DEMO / "demo-target", twin="512x6x1024")
    assert twin.config.hidden_size == 512 and twin.config.num_attention_heads == 8
    assert sum(p.numel() for p in twin.model.parameters()) == param_count(twin.config) > 3 * param_count(src.config)
    # readers of the padding are random, not zero: nothing a kernel could skip
    for w in (twin.model.model.layers[0].self_attn.q_proj.weight, twin.model.lm_head.weight):
        assert w[:, 256:].std() > 0.01
    assert twin.model.model.layers[5].mlp.down_proj.weight.abs().max() == 0  # an extra layer writes nothing
    worst = 0.0
    for p in PROMPTS[:8]:
        ids = src.tokenizer(p)["input_ids"]
        src.reset()
        twin.reset()
        worst = max(worst, (src.forward(ids) - twin.forward(ids)).abs().max().item())
        assert generate(src, ids, 32, Sampling()).token_ids == generate(twin, ids, 32, Sampling()).token_ids
    assert worst <= 1e-4


def test_twin_registry_form(monkeypatch):
    from src.model import load_target
    t = load_target("twin:384x5x800:demo-target", device="cpu")
    assert t.config.hidden_size == 384 and t.config.num_hidden_layers == 5 and t.template == "raw"


def test_draft_twin_gguf_decodes_like_the_draft(tmp_path):
    make_twin_main([str(DEMO / "demo-draft"), str(tmp_path / "twin"), "--hidden", "256", "--layers", "5",
                    "--ffn", "512", "--gguf", "f16"])
    ref = Draft(convert(DEMO / "demo-draft", tmp_path / "draft.gguf", "f16"), n_ctx=256)
    twin = Draft(tmp_path / "twin.gguf", n_ctx=256)
    ids = Target(DEMO / "demo-draft").tokenizer(PROMPTS[0] + PROMPTS[1])["input_ids"]
    a, b = ref.eval(ids, all_logits=True), twin.eval(ids, all_logits=True)
    assert np.abs(a - b).max() < 0.05  # f16 weights and activations
    assert (a.argmax(-1) == b.argmax(-1)).mean() >= 0.95


@pytest.mark.parametrize("name", list(SHAPES))
def test_named_shapes_match_their_references(name):
    """By arithmetic, without building: each within 5 % of the reference with the demo vocabulary."""
    for source in ("demo-target", "demo-draft"):
        cfg = twin_config(AutoConfig.from_pretrained(DEMO / source), *SHAPES[name])
        assert abs(param_count(cfg) / REFERENCE_PARAMS[name] - 1) <= 0.05
    # the count itself, on a shape small enough to build
    small = twin_config(AutoConfig.from_pretrained(DEMO / "demo-draft"), 192, 5, 400)
    from transformers import LlamaForCausalLM
    assert param_count(small) == sum(p.numel() for p in LlamaForCausalLM(small).parameters())
    assert SHAPES["llama-2-7b"] == (4096, 32, 11008) and SHAPES["vicuna-68m"] == (768, 7, 2816)


def test_bad_twin_shapes_are_one_clear_error():
    from src.backends.target import ModelLoadError
    with pytest.raises(ModelLoadError, match="multiple of 64"):
        Target(DEMO / "demo-target", twin="300x4x688")
    with pytest.raises(ModelLoadError, match="unknown twin shape"):
        Target(DEMO / "demo-target", twin="huge")
    assert torch.get_default_dtype() == torch.float32


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_on_the_cpu(tmp_path):
    """`cmds/gpu_check.sh --cpu-smoke`: the GPU benchmark's script with tiny twins, so only CUDA is untested. With
    no PYTHON set it uses the project's .venv, where cmds/test.sh made one."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"} if (ROOT / ".venv/bin/python").exists() else \
        {**os.environ, "PYTHON": sys.executable}
    p = subprocess.run(["bash", "cmds/gpu_check.sh", "--cpu-smoke"], cwd=ROOT, capture_output=True, text=True,
                       env={**env, "TMPDIR": str(tmp_path)}, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert (tmp_path / "duodec-twins/draft-256x5x512.gguf").exists()
    report = (ROOT / "results/tmp/gpu-smoke/report.md").read_text()
    for m in ("sps", "sps-gguf", "pld", "rest", "duodec", "duodec-paper", "duodec-previous"):
        assert f"| {m} | " in report
    for part in ("cost-matched twins", "Target forward, ms", "efficiency", "token-identical to AR", "over SpS"):
        assert part in report
    assert "| duodec | 2 / 2 |" in report  # greedy, fp32: identical to AR


@pytest.mark.slow
def test_device_call_rehearsed(tmp_path):
    """`cmds/gpu_rehearse.sh --quick`: the bundle built (llama.cpp with one CPU variant: the same layout and
    loader as the device's 15), what travels copied and under 64 MiB, the image's transformers 5.17 and friends in
    a fresh environment, the wheels installed as the device does, every import checked, the CPU smoke run with $OUT
    set, and its results back in $OUT within the device tool's limits."""
    import os
    import subprocess
    p = subprocess.run(["bash", "cmds/gpu_check.sh", "--rehearse", "--quick"], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "REHEARSAL_DIR": str(tmp_path)}, timeout=3600)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    assert "[rehearsal] ok:" in p.stdout
    log = (tmp_path / "out/log.txt").read_text()
    assert "imports ok: 3.11" in log and "transformers 5.17.0" in log
    report = (tmp_path / "out/report.md").read_text()
    assert "| duodec | 2 / 2 |" in report and "Cores: **split**" in report
