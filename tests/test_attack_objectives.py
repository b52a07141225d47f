"""The attack objectives against closed forms, a brute-force loop and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from bench.attacks.objectives import (clipscore_drop, gaussian_gram, kl_surrogate, mannwhitney_p,
                                      median_bandwidth, mmd2_unbiased, mmd_permutation_test)


def _mmd2_loop(x: np.ndarray, y: np.ndarray, h: float) -> float:
    """Gretton et al. 2012, eq. 3, written out term by term."""
    k = lambda a, b: math.exp(-float(((a - b) ** 2).sum()) / (2 * h * h))  # noqa: E731
    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def _mmd2_gauss(d: int, s: float, shift: float, h: float) -> float:
    """Population MMD² of N(0, s² I) and N(mu, s² I), |mu| = shift, Gaussian kernel of width h:
    E exp(-|u|²/(2h²)) for u ~ N(m, S) is det(I + S/h²)^(-1/2) exp(-mᵀ(h² I + S)^(-1) m / 2)."""
    same = (1 + 2 * s * s / (h * h)) ** (-d / 2)
    return 2 * same - 2 * same * math.exp(-shift * shift / (2 * (h * h + 2 * s * s)))


def test_mmd2_equals_the_term_by_term_formula() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(0.5, 1.0, size=(9, 3))
    value, h = mmd2_unbiased(x, y)
    assert value == pytest.approx(_mmd2_loop(x, y, h), rel=1e-12, abs=1e-14)
    z = np.concatenate([x, y])
    dists = [np.linalg.norm(z[i] - z[j]) for i in range(len(z)) for j in range(i + 1, len(z))]
    assert h == pytest.approx(float(np.median(dists)), rel=1e-12)
    assert median_bandwidth(z) == pytest.approx(h, rel=1e-12)
    fixed, h2 = mmd2_unbiased(x, y, bandwidth=0.7)
    assert h2 == 0.7 and fixed == pytest.approx(_mmd2_loop(x, y, 0.7), rel=1e-12)


@pytest.mark.parametrize("shift", [0.0, 1.0])
def test_mmd2_is_unbiased_for_the_closed_form(shift: float) -> None:
    """The mean of many small-sample estimates equals the population MMD² within 4 standard
    errors (the biased V-statistic would sit above it by about 2/n here)."""
    d, s, h, n = 4, 1.0, 2.0, 8
    rng = np.random.default_rng(1)
    mu = np.zeros(d)
    mu[0] = shift
    est, biased = [], []
    for _ in range(4000):
        x, y = rng.normal(0, s, (n, d)), rng.normal(mu, s, (n, d))
        est.append(mmd2_unbiased(x, y, h)[0])
        k = gaussian_gram(np.concatenate([x, y]), h)
        biased.append(k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean())
    est = np.array(est)
    truth = _mmd2_gauss(d, s, shift, h)
    se = est.std(ddof=1) / math.sqrt(len(est))
    assert abs(est.mean() - truth) < 4 * se, (est.mean(), truth, se)
    assert np.mean(biased) - truth > 4 * se  # the check can tell the biased V-statistic apart
    if shift:
        assert truth > 10 * se


def test_permutation_test_level_and_power() -> None:
    rng = np.random.default_rng(2)
    pvals = np.array([mmd_permutation_test(rng.normal(size=(10, 3)), rng.normal(size=(10, 3)),
                                           n_permutations=99, seed=i)[1] for i in range(200)])
    assert pvals.min() >= 1 / 100 and pvals.max() <= 1.0
    # under the null the rejection rate at 0.05 is about 0.05 (binomial 200, 0.05: <= 0.11)
    assert (pvals <= 0.05).mean() <= 0.11
    assert 0.3 < pvals.mean() < 0.7  # p-values near uniform
    x, y = rng.normal(size=(12, 3)), rng.normal(1.5, 1.0, size=(12, 3))
    value, p = mmd_permutation_test(x, y, n_permutations=199, seed=0)
    assert value == pytest.approx(mmd2_unbiased(x, y)[0], rel=1e-12)
    assert p == pytest.approx(1 / 200)
    assert mmd_permutation_test(x, y, 199, seed=0) == mmd_permutation_test(x, y, 199, seed=0)


def test_kl_surrogate_sign_and_value() -> None:
    rng = np.random.default_rng(3)
    g_c, g_p = rng.normal(size=8), rng.normal(size=8)
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    imgs = unit(g_p) + 0.1 * rng.normal(size=(5, 8))  # images that look like the perturbed text
    want = 50.0 * float(unit(imgs).mean(0) @ (unit(g_p) - unit(g_c)))
    assert kl_surrogate(imgs, g_c, g_p, 50.0) == pytest.approx(want, rel=1e-12)
    assert kl_surrogate(imgs, g_c, g_p, 50.0) > 0
    # images that still match the original text: negative; scale of the embeddings is irrelevant
    orig_like = unit(g_c) + 0.1 * rng.normal(size=(5, 8))
    assert kl_surrogate(orig_like, g_c, g_p, 50.0) < 0
    assert kl_surrogate(3 * imgs, 2 * g_c, 5 * g_p, 50.0) == pytest.approx(want, rel=1e-12)
    assert kl_surrogate(imgs, g_c, g_c, 50.0) == 0.0


def test_clipscore_drop_and_mannwhitney_against_scipy() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(30, 3, 16), rng.normal(24, 3, 16)
    assert clipscore_drop(a, b) == pytest.approx(a.mean() - b.mean())
    p = mannwhitney_p(a, b)
    assert p == pytest.approx(mannwhitneyu(a, b, alternative="greater").pvalue)
    assert p < 0.01
    assert mannwhitney_p(b, a) > 0.99  # one-sided: a rise in the score is not a success
    assert mannwhitney_p(a, a) > 0.4


def test_bad_input() -> None:
    x = np.zeros((4, 3))
    with pytest.raises(ValueError, match="shapes"):
        mmd2_unbiased(x, np.zeros((4, 2)))
    with pytest.raises(ValueError, match="at least 2"):
        mmd2_unbiased(x[:1], x)
    with pytest.raises(ValueError, match="n_permutations"):
        mmd_permutation_test(x, x, n_permutations=0)
    with pytest.raises(ValueError, match="bandwidth"):
        mmd2_unbiased(x, x, bandwidth=-1.0)
    assert mmd2_unbiased(x, x)[1] == 1.0  # coinciding points: a defined bandwidth, MMD² 0
