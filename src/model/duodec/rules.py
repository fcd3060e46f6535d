"""DuoDecoding's rules as pure functions: the paper's (the theta rule for k sequences, gamma from the speed
ratio, k sequences sharing gamma) and this project's (expected tokens of a chain, the overlapped pipeline's
rate), and the names of the ways a round can run. No state, no timing: policy.py feeds them
what the rounds measured."""
import numpy as np

# overlap: each side on its own cores at once; sequential and none: one side at a time, so each may take every
# core in its turn (the -all modes, open only when the cores are shared)
MODES = ("overlap", "sequential", "sequential-all", "none", "none-all")


def kind(mode):
    """overlap, sequential or none: what the round does, whatever cores it does it on."""
    return mode.removesuffix("-all")


def on_every_core(mode):
    return mode.endswith("-all")


def choose_first_tokens(p_first, p_second_top1, max_seqs):
    """The theta rule. First tokens of the draft sequences: the top-1, plus each next-ranked token whose
    probability beats theta = p(1st top-1) * p(2nd top-1), up to max_seqs in all."""
    order = np.argsort(-p_first, kind="stable")[:max_seqs]
    theta = p_first[order[0]] * p_second_top1
    firsts = [int(order[0])]
    for t in order[1:]:
        if p_first[t] <= theta:
            break
        firsts.append(int(t))
    return firsts


def balance_gamma(draft_step, target_fwd, cap=64):
    """The paper's gamma: the smallest whose drafting time covers one target forward over gamma tokens."""
    ns = sorted(target_fwd)
    t_fwd = lambda n: float(np.interp(n, ns, [target_fwd[x] for x in ns]))
    for g in range(1, cap + 1):
        if g * draft_step[1] >= t_fwd(g):
            return g
    return cap


def split_depths(gamma, most):
    """The paper's k sequences sharing gamma: each gets gamma // k tokens, for k = 1..most."""
    return {k: max(1, gamma // k) for k in range(1, most + 1)}


def chain_tokens(a, g):
    """Expected tokens a round gains from g drafts at acceptance a: the accepted ones, then the target's own."""
    return (1 - a ** (g + 1)) / (1 - a)


def overlap_rate(a, full, empty, g, c=0):
    """Tokens per second of the overlapped pipeline, a two-state chain: a full round verifies g pending drafts
    (`full` seconds) and stays full with probability a^(g + 1) (all held, and the next draft's first token
    accepted); an empty round (after a rejection, `empty` seconds) verifies c catch-up drafts (none: the target's
    own token) and fills with probability a^(c + 1). Each cycle ends at one rejection, so it gains 1 / (1 - a)
    tokens, in one empty round and a^(c + 1) / (1 - a^(g + 1)) full ones."""
    return (1 / (1 - a)) / (empty + a ** (c + 1) * full / (1 - a ** (g + 1)))

