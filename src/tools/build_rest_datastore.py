"""Build a REST datastore (draftretriever's suffix-array index) from token ids.

    python -m src.tools.build_rest_datastore --demo    # the demo target's, where REST_DATASTORES looks, if missing
    python -m src.tools.build_rest_datastore --tokenizer data/models/demo-target --stdlib-train --out data/rest/demo.idx
    python -m src.tools.build_rest_datastore --tokenizer /models/vicuna-7b-v1.5 --json sharegpt.json --out x.idx

--stdlib-train uses the demo pair's training split; --json takes ShareGPT-style ({"conversations":
[{"from", "value"}]}), UltraChat-style ({"data": [user, assistant, ...]}) or {"text": ...} records.
"""
import argparse
import json
import os
from pathlib import Path

import draftretriever
from transformers import AutoTokenizer

ASSISTANT = {"gpt", "assistant", "chatgpt", "bard", "model"}


def json_texts(path):
    """The assistant replies (or plain texts) of a JSON list or JSONL file."""
    raw = Path(path).read_text(encoding="utf-8")
    records = json.loads(raw) if raw.lstrip().startswith("[") else [json.loads(l) for l in raw.splitlines() if l.strip()]
    for r in records:
        if "conversations" in r:
            yield from (m["value"] for m in r["conversations"] if m.get("from", m.get("role")) in ASSISTANT)
        elif "data" in r:
            yield from r["data"][1::2]
        elif "text" in r:
            yield r["text"]


def stdlib_train_texts():
    from src.tools.train_demo_pair import is_held_out, stdlib_files
    return (src for rel, src in stdlib_files() if not is_held_out(rel))


def build(texts, tokenizer, out):
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = draftretriever.Writer(file_path=str(out), vocab_size=len(tokenizer))
    n_tokens = 0
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if ids:
            writer.add_entry(ids)
            n_tokens += len(ids)
    writer.finalize()
    return n_tokens


def demo_datastore():
    """The demo target's index, built from the shipped training split the first time it is needed; written
    under another name and renamed, so that two processes building it at once never leave half a file."""
    from src.utils import REST_DATASTORES, resolve
    out = Path(REST_DATASTORES["demo-target"])
    if not out.is_file():
        part = out.with_name(f"{out.name}.{os.getpid()}.part")
        build(stdlib_train_texts(), AutoTokenizer.from_pretrained(resolve("demo-target")[0]), part)
        os.replace(part, out)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", help="the target model's directory")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--demo", action="store_true", help="the demo target's index, built if missing")
    src.add_argument("--stdlib-train", action="store_true", help="the demo pair's training split")
    src.add_argument("--json", help="ShareGPT/UltraChat-style JSON or JSONL")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    if args.demo:
        print(f"REST datastore: {demo_datastore()}")
        return
    if not args.tokenizer or not args.out:
        ap.error("--stdlib-train and --json need --tokenizer and --out")
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    texts = stdlib_train_texts() if args.stdlib_train else json_texts(args.json)
    n = build(texts, tokenizer, args.out)
    print(f"wrote {args.out} ({n} tokens)")


if __name__ == "__main__":
    main()
