"""Lookahead decoding (Fu et al., "Break the Sequential Dependency of LLM Inference Using Lookahead Decoding",
ICML 2024): no draft; the target proposes its own n-grams by Jacobi iteration, and verifies them in the same
forward.

Each forward feeds, after the cache (which holds everything before the last verified token, at position p):

    [last token] [level 0: W - 1 guesses] [levels 1 .. N - 2: W guesses each] [verification branch]

- The lookahead branch is a window of N - 1 levels of Jacobi guesses. Column j's trajectory is the chain token j
  (the last token, then level 0's tokens: positions p .. p + W - 1) and level l's token j (position p + j + l),
  for l = 1 .. N - 2; each token sees the chain up to column j and its own column's tokens below it, which is
  what one Jacobi step of that trajectory depends on. The newest level's outputs (argmax) are the next level;
  each column's trajectory with its new output is an N-gram for the pool, keyed by its first token. The window
  then moves one position (the oldest level gives way), as upstream's default does.
- The verification branch: up to G n-grams from the pool whose key is the last token, as a trie, each token
  seeing the last token and its own ancestors; checked by the deterministic-candidate rule, which keeps
  sampling exact: every candidate is a function of verified tokens and of earlier forwards' argmaxes (the
  window starts from the prompt's tokens, chosen by rule, not at random).
- The first N - 2 forwards fill the window (each adds the level its outputs make), as upstream's do. The pool is
  also seeded with the prompt's n-grams and fed the answer's as they are verified, at most G per key (the least
  recently used goes first).

Written for this project's Target backend (one 4-D mask for both branches, transformers' API, any decoder that
takes position ids and a 4-D mask: Llama, Qwen2); upstream's `lade` patches transformers 4.36's Llama only.
"""
import time
from collections import OrderedDict

import torch

from src.argtypes import ranged
from src.model.base import Method, build_tree, decode_loop
from src.verify import distributions, verify_tree

DRAFT = None


def add_args(ap):
    ap.add_argument("--level", type=ranged(int, 3, 16), default=5,
                    help="lookahead: N, the n-gram size (the window keeps N - 1 levels of guesses)")
    ap.add_argument("--window", type=ranged(int, 1, 64), default=7, help="lookahead: W, the window's columns")
    ap.add_argument("--guess", type=ranged(int, 0, 64), default=7,
                    help="lookahead: G, the most n-grams verified per forward (and kept per key in the pool)")


class Pool:
    """N-grams keyed by their first token: up to `per_key` (n - 1)-token continuations each, least recently used
    first out."""

    def __init__(self, n, per_key):
        self.n, self.per_key, self.grams = n, per_key, {}

    def add(self, gram):
        if len(gram) != self.n or self.per_key == 0:
            return
        tails = self.grams.setdefault(gram[0], OrderedDict())
        tails.pop(tuple(gram[1:]), None)
        tails[tuple(gram[1:])] = None
        if len(tails) > self.per_key:
            tails.popitem(last=False)

    def add_all(self, tokens):
        for i in range(len(tokens) - self.n + 1):
            self.add(tokens[i:i + self.n])

    def continuations(self, key):
        return [list(t) for t in self.grams.get(key, ())]


def layout(prefix, levels, parents):
    """Positions and the attention mask (True = may attend) of one forward: the last token, the window's levels
    (level 0: W - 1 tokens; levels 1..: W each) and a trie (`parents[i]`: -1 under the last token), after
    `prefix` cached tokens. Returns (positions, mask of shape (q, prefix + q))."""
    w = len(levels[0]) + 1
    n_window = w + w * (len(levels) - 1)
    q = n_window + len(parents)
    mask = torch.zeros(q, prefix + q, dtype=torch.bool)
    mask[:, :prefix] = True
    positions = [0] * q
    for j in range(w):  # the chain: the last token, then level 0
        positions[j] = j
        mask[j, prefix:prefix + j + 1] = True
    for lv in range(1, len(levels)):  # level lv's token j: the chain up to j, then column j of levels 1 .. lv
        for j in range(w):
            row = w * lv + j
            positions[row] = j + lv
            mask[row, prefix:prefix + j + 1] = True
            for below in range(1, lv + 1):
                mask[row, prefix + w * below + j] = True
    depth = []
    for i, par in enumerate(parents):  # the trie: the last token, its ancestors, itself
        row = n_window + i
        depth.append(1 if par < 0 else depth[par] + 1)
        positions[row] = depth[i]
        mask[row, prefix] = True
        if par >= 0:
            mask[row, prefix + 1:] |= mask[n_window + par, prefix + 1:]
        mask[row, prefix + row] = True
    return [prefix + p for p in positions], mask


def seed_level(prompt, width):
    """Level 0's first guesses: the prompt's tokens, picked by a fixed rule (no randomness: candidates must be
    functions of the verified tokens for sampling to stay exact)."""
    return [prompt[(7 * j) % len(prompt)] for j in range(width)]


class Window:
    """One answer's lookahead state: the window's levels and the n-gram pool."""

    def __init__(self, prompt, level, window, guess):
        self.n_levels = level - 1
        self.levels = [seed_level(prompt, window - 1)]
        self.pool = Pool(level, guess)
        self.pool.add_all(prompt)

    def move(self, last, new):
        """After a forward that fed `last` and the window: while filling, the new level is added; once full, each
        column's trajectory with its new output goes to the pool, and the window moves one position."""
        if len(self.levels) < self.n_levels:
            self.levels.append(new)
            return
        chain = [last] + self.levels[0]
        for j in range(len(new)):
            self.pool.add([chain[j]] + [lv[j] for lv in self.levels[1:]] + [new[j]])
        self.levels = [self.levels[1][1:]] + self.levels[2:] + [new]


def step(target, seq, win, sampling, gen, budget, spent=None):
    """One forward after seq (the cache holds seq[:-1]): verify the pool's n-grams under seq[-1], and move the
    window. Returns the tokens gained; counts the forward and what it fed in `spent`."""
    guesses = [g[:budget] for g in win.pool.continuations(seq[-1])] if budget > 0 else []
    tokens, parents = build_tree(guesses, win.pool.n * max(1, win.pool.per_key))
    window = [seq[-1]] + [t for lv in win.levels for t in lv]
    start, w, n_window = target.length, len(win.levels[0]) + 1, len(window)
    positions, mask = layout(start, win.levels, parents)
    if spent is not None:
        spent["forwards"] += 1
        spent["fed_tokens"] += n_window + len(tokens)
        spent["guess_tokens"] += len(tokens)
    logits = target.forward(window + tokens, position_ids=positions, attention_mask=mask[None, None])
    rows = logits[[0] + list(range(n_window, n_window + len(tokens)))]
    probs = distributions(rows, sampling.temperature, sampling.top_k, sampling.top_p)
    path, nxt = verify_tree(tokens, parents, probs[0], probs[1:], gen)
    target.keep_path(start, [0] + [n_window + i for i in path])
    win.move(seq[-1], logits[n_window - w:n_window].argmax(-1).tolist())  # the newest level's (the chain's at first)
    return [tokens[i] for i in path] + [nxt]


def generate(target, prompt_ids, max_new_tokens, sampling, gen, shape=(5, 7, 7)):
    """shape: (level N, window W, guess G). The answer's stats say where the time went: forwards, the tokens they
    fed (window and guesses), the guesses alone, and the seconds the steps took."""
    win = Window(list(prompt_ids), *shape)
    spent = {"forwards": 0, "fed_tokens": 0, "guess_tokens": 0, "step_s": 0.0}

    def one(seq, budget):
        start = time.perf_counter()
        gained = step(target, seq, win, sampling, gen, budget, spent)
        spent["step_s"] += time.perf_counter() - start
        win.pool.add_all((seq + gained)[-len(gained) - win.pool.n + 1:])  # the answer's n-grams, as verified
        return gained

    out = decode_loop(target, prompt_ids, max_new_tokens, one)
    out.stats.update(spent)
    return out


def make(args, target, draft=None):
    shape = (args.level, args.window, args.guess)

    def forward(prompt_ids, max_new_tokens, sampling, gen):
        return generate(target, prompt_ids, max_new_tokens, sampling, gen, shape)

    return Method(forward, {"level": args.level, "window": args.window, "guess": args.guess})
