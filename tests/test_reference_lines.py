"""Reference lines: hand values, tie rules and their JSD against p*."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.spatial.distance import jensenshannon

from pluralign.eval.reference import (
    REFERENCE_LINES,
    STANDARD_LINES,
    majority,
    noise,
    reference_line,
    reference_lines,
    reverse,
    uniform,
)
from pluralign.registry import UnknownNameError


def test_majority_hand_values_and_ties_take_the_first():
    assert_allclose(majority([0.2, 0.5, 0.3]), [0, 1, 0])
    assert_allclose(majority([0.4, 0.2, 0.4]), [1, 0, 0])
    assert_allclose(majority([[0.1, 0.9], [0.6, 0.4]]), [[0, 1], [1, 0]])


def test_reverse_swaps_ranks_and_keeps_positions():
    assert_allclose(reverse([0.5, 0.3, 0.2]), [0.2, 0.3, 0.5])
    assert_allclose(reverse([0.1, 0.6, 0.3]), [0.6, 0.1, 0.3])
    # not a sort: the middle rank stays where it is
    assert_allclose(reverse([0.3, 0.1, 0.6]), [0.3, 0.6, 0.1])
    # K=4: max<->min and second<->third
    assert_allclose(reverse([0.4, 0.1, 0.2, 0.3]), [0.1, 0.4, 0.3, 0.2])
    # ties: the earlier of equal values ranks higher, so it receives the smaller value
    assert_allclose(reverse([0.5, 0.25, 0.25]), [0.25, 0.25, 0.5])


def test_reverse_batched_is_an_involution_without_ties():
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(5), size=20)
    r = reverse(p)
    assert r.shape == p.shape
    assert_allclose(np.sort(r, axis=1), np.sort(p, axis=1))
    assert_allclose(reverse(r), p)
    # the argmax of p receives the minimum of p
    rows = np.arange(20)
    assert_allclose(r[rows, p.argmax(axis=1)], p.min(axis=1))


def test_uniform():
    assert_allclose(uniform([0.7, 0.2, 0.1]), [1 / 3] * 3)
    assert_allclose(uniform(np.ones((2, 4))), np.full((2, 4), 0.25))


def test_noise_hand_values_and_clipping():
    assert_allclose(noise([0.7, 0.2, 0.1], 0.1), [0.6, 0.2, 0.2])
    assert_allclose(noise([0.7, 0.2, 0.1], 0.05), [0.65, 0.2, 0.15])
    assert_allclose(noise([0.1, 0.2, 0.7], 0.1), [0.2, 0.2, 0.6])
    # K=2 with max 0.5: eps 0.8 moves only what the max holds
    assert_allclose(noise([0.5, 0.5], 0.8), [0.0, 1.0])
    assert_allclose(noise([1.0], 0.1), [1.0])
    # counts are normalised first
    assert_allclose(noise([7, 2, 1], 0.1), [0.6, 0.2, 0.2])
    with pytest.raises(ValueError, match="eps"):
        noise([0.5, 0.5], -0.1)


def test_noise_batched_keeps_mass_and_nonnegativity():
    rng = np.random.default_rng(4)
    p = rng.dirichlet(np.ones(6) * 0.3, size=30)
    out = noise(p, 0.1)
    assert (out >= 0).all()
    assert_allclose(out.sum(axis=1), 1.0)
    assert_allclose(np.abs(out - p).sum(axis=1), 0.2)


def test_registry_holds_the_standard_set():
    assert STANDARD_LINES == ("majority", "reverse", "uniform", "noise_0.1", "noise_0.05")
    assert set(REFERENCE_LINES.names()) == set(STANDARD_LINES)
    assert_allclose(reference_line("noise_0.05", [0.7, 0.2, 0.1]), [0.65, 0.2, 0.15])
    with pytest.raises(UnknownNameError, match=r"noise_0\.1"):
        reference_line("noise_01", [0.5, 0.5])


def test_reference_lines_jsd_over_a_dataset():
    targets = np.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [1.0, 0.0, 0.0]])
    results = reference_lines(targets)
    assert list(results) == list(STANDARD_LINES)
    expected = {
        "majority": [[1, 0, 0], [0, 1, 0], [1, 0, 0]],
        "reverse": [[0.1, 0.2, 0.7], [0.6, 0.1, 0.3], [0.0, 0.0, 1.0]],
        "uniform": [[1 / 3] * 3] * 3,
        "noise_0.1": [[0.6, 0.2, 0.2], [0.2, 0.5, 0.3], [0.9, 0.0, 0.1]],
        "noise_0.05": [[0.65, 0.2, 0.15], [0.15, 0.55, 0.3], [0.95, 0.0, 0.05]],
    }
    for name, preds in expected.items():
        per = [jensenshannon(a, b) for a, b in zip(preds, targets, strict=True)]
        assert_allclose(results[name].per_prompt, per, atol=1e-9, rtol=0)
        assert results[name].value == pytest.approx(np.mean(per), abs=1e-9)
        assert results[name].n == 3
    # a one-hot p*: majority is exact, reverse is maximally far
    assert results["majority"].per_prompt[2] == pytest.approx(0.0, abs=1e-12)
    assert results["reverse"].per_prompt[2] == pytest.approx(math.sqrt(math.log(2)), abs=1e-12)
    assert results["noise_0.05"].value < results["noise_0.1"].value < results["reverse"].value


def test_reference_lines_subset_and_validation():
    results = reference_lines([[0.5, 0.5]], names=["uniform"])
    assert list(results) == ["uniform"]
    assert results["uniform"].value == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="row 1 sums to 0"):
        reference_lines([[0.5, 0.5], [0.0, 0.0]])


def test_reference_lines_on_questions_with_different_numbers_of_beliefs():
    from pluralign.beliefs.distances import jsd_per_prompt

    targets = [[0.7, 0.3], [0.5, 0.3, 0.2]]
    lines = reference_lines(targets, ["majority", "reverse"])
    expected_majority = np.mean([jsd_per_prompt([1.0, 0.0], [0.7, 0.3])[0],
                                 jsd_per_prompt([1.0, 0.0, 0.0], [0.5, 0.3, 0.2])[0]])
    assert lines["majority"].value == pytest.approx(expected_majority)
    expected_reverse = np.mean([jsd_per_prompt([0.3, 0.7], [0.7, 0.3])[0],
                                jsd_per_prompt([0.2, 0.3, 0.5], [0.5, 0.3, 0.2])[0]])
    assert lines["reverse"].value == pytest.approx(expected_reverse)
