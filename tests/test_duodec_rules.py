"""DuoDecoding's rules (src/model/duodec/rules.py), by hand: the theta rule, the paper's gamma, the overlap rate."""
import numpy as np
import pytest

from src.model import duodec


def test_choose_first_tokens_on_hand_made_probabilities():
    p = np.array([0.05, 0.40, 0.30, 0.15, 0.10])
    # theta = 0.40 * 0.5 = 0.2: tokens 2 (0.30) join, 3 (0.15) does not
    assert duodec.choose_first_tokens(p, 0.5, 8) == [1, 2]
    # a confident draft: theta = 0.40 * 0.9 = 0.36 > 0.30, one sequence
    assert duodec.choose_first_tokens(p, 0.9, 8) == [1]
    # an unsure one: theta = 0.04, every token but 0.05 > 0.04... capped at max_seqs
    assert duodec.choose_first_tokens(p, 0.1, 3) == [1, 2, 3]
    assert duodec.choose_first_tokens(p, 0.1, 8) == [1, 2, 3, 4, 0]


def test_balance_gamma_by_hand():
    # draft 0.5 ms a step; target 3.0 ms + 0.1 ms a token: 0.5 g >= 3.0 + 0.1 g from g = 7.5
    assert duodec.balance_gamma({1: 0.0005}, {1: 0.0031, 64: 0.0094}) == 8
    assert duodec.balance_gamma({1: 1.0}, {1: 0.001, 8: 0.002}) == 1  # a slow draft: one token
    assert duodec.balance_gamma({1: 1e-9}, {1: 1.0, 8: 2.0}, cap=16) == 16  # a free draft: the cap


def test_overlap_rate_against_the_two_state_chain_worked_by_hand():
    # a = 0.5, g = 1. Full round: 1 s, gains 1.5 tokens, stays full w.p. 0.25.
    # No catch-up: empty round 1 s, 1 token, fills w.p. 0.5 -> stationary (0.6, 0.4): 1.2 tokens a second.
    assert duodec.overlap_rate(0.5, 1.0, 1.0, 1) == pytest.approx(1.2)
    # One catch-up token: empty round 2 s, gains 1.5, fills w.p. 0.25 -> (0.75, 0.25): 1.5 tokens in 1.75 s.
    assert duodec.overlap_rate(0.5, 1.0, 2.0, 1, c=1) == pytest.approx(6 / 7)
