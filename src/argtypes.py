"""Command-line flags with declared ranges, shared by every entry point and method.

A bad value ends the program before any model loads, in one line and with exit code 2:
`error: --top-p must be in (0, 1]`.
"""
import argparse
import math
import os
import sys


class Parser(argparse.ArgumentParser):
    """argparse, but an error is one line without the usage block (`--help` still shows it)."""

    def error(self, message):
        if message.startswith("argument "):  # "argument --x: must be ..." -> "--x must be ..."
            flag, _, rest = message[len("argument "):].partition(": ")
            message = f"{flag.split('/')[-1]} {rest}"
        self.exit(2, f"error: {message}\n")


def ranged(kind, lo=None, hi=None, lo_open=False, hi_open=False):
    """An argparse type: `kind` (int or float) within [lo, hi]; lo_open / hi_open exclude an end."""
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    interval = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'}, not "
                                             f"{text!r}") from None
        bad = not math.isfinite(value) or (lo is not None and (value < lo or (lo_open and value == lo))) \
            or (hi is not None and (value > hi or (hi_open and value == hi)))
        if bad:
            if lo is not None and hi is None and not lo_open and kind is int:
                raise argparse.ArgumentTypeError(f"must be an integer >= {lo}, not {text}")
            raise argparse.ArgumentTypeError(f"must be in {interval}, not {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


positive = ranged(int, 1)
non_negative = ranged(int, 0)


def non_negative_or(*words):
    """An argparse type: one of `words`, or an integer >= 0."""
    def parse(text):
        return text if text in words else non_negative(text)

    parse.__name__ = "int"
    return parse


def positive_or(*words):
    """An argparse type: one of `words`, or an integer >= 1."""
    def parse(text):
        return text if text in words else positive(text)

    parse.__name__ = "int"
    return parse


gamma_or_auto = positive_or("auto")  # 'auto' or a draft length


def threads(flag):
    """An argparse type for a thread count: more than the cores this process may use only oversubscribes
    them (a run 10x slower), so it is capped there, with a warning."""
    def parse(text):
        n = positive(text)
        cores = len(os.sched_getaffinity(0))
        if n > cores:
            print(f"warning: {flag} {n} capped at the {cores} cores available here", file=sys.stderr)
        return min(n, cores)

    parse.__name__ = "int"
    return parse
