"""One prompt, or a chat, streamed as the method accepts its tokens; any method of the harness, inference's flags.

    python -m src.generate --method duodec --target qwen-coder-1.5b --draft qwen-coder-0.5b-gguf "Write a quicksort"
    python -m src.generate --method sps-gguf --target demo-target --draft demo-draft-gguf --chat

From a script: `Generator(method="duodec", target=..., draft=...)`, then `.reply(turns, on_text=print)`.
"""
import argparse
import sys
import time
from dataclasses import dataclass

import torch

from src.argtypes import Parser
from src.eval.cli import run_cli
from src.eval.inference import add_common_args, build, check_device, chosen_method, close_run
from src.eval.prompts import check_prompt, prompt_ids
from src.model import METHODS, add_method_args, check_draft, check_method_args, load_method
from src.model.base import LISTENER, Sampling


@dataclass
class Reply:
    text: str
    token_ids: list
    seconds: float
    forwards: int
    stats: dict

    def summary(self):
        """The closing line: speed, tokens per target forward, and the rounds' modes where the method has them."""
        n = len(self.token_ids)
        line = f"{n} tokens in {self.seconds:.2f} s: {n / max(self.seconds, 1e-9):.1f} tokens/s, " \
               f"{n / max(self.forwards, 1):.2f} tokens per forward"
        modes = self.stats.get("mode_rounds") or {}
        return line + (", rounds " + ", ".join(f"{k} {v}" for k, v in modes.items() if v) if modes else "")


def parser(method):
    ap = Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prompt", nargs="?", help="the prompt (none with --chat)")
    ap.add_argument("--chat", action="store_true", help="read turns from stdin until an empty line or EOF")
    ap.add_argument("--method", default="ar", choices=list(METHODS))
    ap.add_argument("--draft", default=None, help="registry name, path or hub name: HF directory or GGUF file")
    ap.add_argument("--template", default=None, help="fschat template name, 'chat' or 'raw' (default: the registry's)")
    add_common_args(ap)
    add_method_args(load_method(method), ap, method)
    return ap


def parse_args(argv):
    method = chosen_method(argv)
    ap = parser(method)
    args = ap.parse_args(argv)
    module = load_method(method)
    check_method_args(module, args, ap)
    problem = check_device(args.device) or check_draft(module, method, args.draft)
    if problem:
        ap.error(problem)
    return args, module


class Generator:
    """A target, its draft and one method, loaded once; `reply` answers a conversation's last turn."""

    def __init__(self, argv=None, **flags):
        """Flags as inference's, as a list (`["--method", "duodec"]`) or as keywords (`method="duodec"`)."""
        argv = list(argv or []) + [x for k, v in flags.items() if v is not False
                                   for x in ([f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)]))]
        args, module = parse_args(argv)
        self.args = args
        self.target, self.cores, self.draft, self.forward = build(args, module)
        self.template = args.template or self.target.template
        self.sampling = Sampling(args.temperature, args.top_k, args.top_p)
        self.gen = torch.Generator(self.target.device or "cpu").manual_seed(args.seed)

    def reply(self, turns, replies=(), on_text=None):
        """The reply to turns[-1] after the earlier turns and replies; on_text(piece) as each round's tokens land."""
        tok, stop, most = self.target.tokenizer, self.target.stop_ids, self.args.max_new_tokens
        ids = prompt_ids(tok, self.template, list(turns), list(replies))
        check_prompt(ids, turns[-1], most, self.target.max_length, "the prompt")
        shown, text = [], ""

        def listen(tokens):
            nonlocal text
            for t in tokens:
                if t in stop or len(shown) >= most:
                    return
                shown.append(t)
            now = tok.decode(shown, skip_special_tokens=True)
            if on_text is not None and now.startswith(text) and not now.endswith("\ufffd") and now != text:
                on_text(now[len(text):])
                text = now

        t0 = time.perf_counter()
        token = LISTENER.set(listen)
        try:
            out = self.forward(ids, most, self.sampling, self.gen)
        finally:
            LISTENER.reset(token)
        seconds = time.perf_counter() - t0
        final = tok.decode(out.token_ids, skip_special_tokens=True)
        if on_text is not None and final.startswith(text) and final != text:
            on_text(final[len(text):])
        return Reply(final, out.token_ids, seconds, out.decoding_steps, out.stats)

    def close(self):
        close_run(self.forward, self.draft)


def main(argv=None):
    args, _ = parse_args(argv)
    if not args.chat and not (args.prompt or "").strip():
        parser(args.method).error("give a prompt, or --chat")
    gen = Generator(argv)
    show = lambda piece: print(piece, end="", flush=True)
    try:
        if not args.chat:
            out = gen.reply([args.prompt], on_text=show)
            print()
            print(f"[{out.summary()}]", file=sys.stderr)
            return
        turns, replies = [], []
        while True:
            line = input("> ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
            if not line.strip():
                return
            turns.append(line)
            out = gen.reply(turns, replies, on_text=show)
            replies.append(out.text)
            print()
            print(f"[{out.summary()}]", file=sys.stderr)
    finally:
        gen.close()


if __name__ == "__main__":
    run_cli(main)
