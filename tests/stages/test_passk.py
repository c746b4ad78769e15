"""Unbiased pass@k: the product form equals the definition, counted over every k-subset."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest

from rollout_pipeline.stages.passk import mean_pass_at_k, pass_at_k, powers_of_two_up_to


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """The definition: the fraction of the C(n, k) subsets of k samples that contain a passing one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    return sum(any(subset) for subset in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_matches_brute_force_enumeration_for_every_c_and_k(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_edge_cases_no_pass_all_pass_and_k_equal_to_n():
    assert pass_at_k(8, 0, 1) == 0.0 and pass_at_k(8, 0, 8) == 0.0  # c = 0: never
    assert pass_at_k(8, 8, 1) == 1.0 and pass_at_k(8, 8, 8) == 1.0  # c = n: always
    assert pass_at_k(8, 1, 8) == 1.0  # k = n: any pass is drawn
    assert pass_at_k(5, 2, 4) == 1.0  # only 3 failures: 4 draws must hit a pass


def test_pass_at_1_is_the_pass_rate():
    assert pass_at_k(16, 5, 1) == pytest.approx(5 / 16)


def test_stable_for_large_n_where_binomials_overflow_floats():
    n, c, k = 2000, 7, 512  # C(2000, 512) is far beyond float range
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12)


@pytest.mark.parametrize("n, c, k", [(0, 0, 1), (4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_rejects_impossible_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_reported_ks_are_powers_of_two_up_to_n():
    assert powers_of_two_up_to(8) == [1, 2, 4, 8]
    assert powers_of_two_up_to(6) == [1, 2, 4]
    assert powers_of_two_up_to(1) == [1]
    assert powers_of_two_up_to(0) == []


def test_mean_over_prompts_counts_each_prompt_only_for_k_up_to_its_own_n():
    # Three prompts: two with 4 rollouts (1 and 0 passes), one with 2 rollouts (both pass).
    result = mean_pass_at_k({(4, 1): 1, (4, 0): 1, (2, 2): 1})
    assert result[1] == (pytest.approx((1 / 4 + 0 + 1) / 3), 3)
    assert result[2] == (pytest.approx((pass_at_k(4, 1, 2) + 0 + 1) / 3), 3)
    assert result[4] == (pytest.approx((1 + 0) / 2), 2)  # the 2-rollout prompt has no pass@4
    assert set(result) == {1, 2, 4}
    assert mean_pass_at_k({}) == {}
