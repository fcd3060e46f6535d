"""Hub names for the target (ORG/NAME[@REVISION]) and the GGUF draft (ORG/REPO:FILE or a glob), found in a Hugging
Face cache laid out on disk as huggingface_hub lays it out, with HF_HUB_OFFLINE=1; an uncached name is one error."""
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def cache_repo(hub, repo, files):
    """models--ORG--NAME/{blobs, refs/main, snapshots/COMMIT}: each file a blob the snapshot links to."""
    folder = hub / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs/main").write_text(COMMIT)
    (folder / "blobs").mkdir()
    snapshot = folder / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for i, (name, source) in enumerate(files.items()):
        blob = folder / "blobs" / f"{i:040x}"
        shutil.copyfile(source, blob)
        os.symlink(os.path.relpath(blob, snapshot), snapshot / name)


@pytest.fixture(scope="module")
def hub_home(tiny, tmp_path_factory):
    home = tmp_path_factory.mktemp("hf_home")
    target = tiny["target"]
    cache_repo(home / "hub", "org/tiny-target", {f.name: f for f in target.iterdir()})
    gguf = f"{tiny['draft']}.gguf"
    cache_repo(home / "hub", "org/tiny-draft-GGUF", {"tiny-draft-f32.gguf": gguf, "tiny-draft-copy-f32.gguf": gguf,
                                                      "tiny-draft-q8.gguf": gguf})
    return home


def run(module, *args, home, extra_env=()):
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", **dict(extra_env)}
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)


def decode(home, target, draft, extra_env=()):
    p = run("src.generate", "--target", target, "--method", "sps", "--draft", draft, "--template", "raw",
            "--max-new-tokens", "16", "def f(x):\n", home=home, extra_env=extra_env)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


def test_hub_names_decode_as_the_paths_do(tiny, hub_home):
    by_path = decode(hub_home, tiny["target"], f"{tiny['draft']}.gguf")
    assert decode(hub_home, "org/tiny-target", "org/tiny-draft-GGUF:tiny-draft-q8.gguf") == by_path
    assert decode(hub_home, "org/tiny-target@main", "org/tiny-draft-GGUF:*q8.gguf") == by_path
    # a registry entry may name a hub model too
    assert decode(hub_home, "demo-target", "org/tiny-draft-GGUF:*q8.gguf",
                  {"DUODEC_MODEL_DEMO_TARGET": "org/tiny-target"}) == by_path


def test_uncached_or_ambiguous_names_are_one_clear_error(hub_home):
    p = run("src.utils", "check", "org/not-cached", home=hub_home)
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1
    assert "'org/not-cached' is not in the Hugging Face cache" in p.stderr and "HF_HUB_OFFLINE=1" in p.stderr
    assert "HF_HOME" in p.stderr
    p = run("src.utils", "check", "org/tiny-target", "sps --draft org/tiny-draft-GGUF:*f32.gguf", home=hub_home)
    assert p.returncode == 1 and "2 files of org/tiny-draft-GGUF match '*f32.gguf'" in p.stderr
    p = run("src.utils", "check", "org/tiny-target", "sps --draft org/tiny-draft-GGUF:*q4.gguf", home=hub_home)
    assert p.returncode == 1 and "0 files of org/tiny-draft-GGUF match '*q4.gguf'" in p.stderr
    assert run("src.utils", "check", "org/tiny-target", "sps --draft org/tiny-draft-GGUF:*q8.gguf",
               home=hub_home).returncode == 0
