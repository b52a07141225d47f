"""Objectives and two-sample tests between the images of an original prompt and of a perturbed
prompt, drawn from the same initial noises (common random numbers).

* ``mmd2_unbiased``: the unbiased MMD² U-statistic (Gretton et al. 2012, JMLR, eq. 3) with a
  Gaussian kernel ``exp(-|a - b|² / (2 h²))`` whose bandwidth ``h`` is the median pairwise
  distance of the pooled sample (the median heuristic, Gretton et al. 2012, section 8);
  ``mmd_permutation_test`` its permutation p-value.
* ``kl_surrogate``: the distribution objective of Gao et al. 2023 (arXiv 2306.13103). With CLIP
  as a likelihood model, ``p(c | x) ∝ exp(alpha h(x)ᵀ g(c))`` (``h``, ``g`` the normalised image
  and text embeddings, ``alpha`` CLIP's logit scale) and a uniform prior over prompts,
  ``log p(x | c') - log p(x | c) = alpha h(x)ᵀ (g(c') - g(c))`` (the normaliser over prompts
  cancels), so ``KL(p(x | c') || p(x | c)) = alpha E_{x ~ p(x | c')}[h(x)]ᵀ (g(c') - g(c))``,
  estimated with the images ``x_i`` of the *perturbed* prompt. Sign convention: positive means
  the perturbed prompt's images sit closer to the perturbed text than to the original text;
  larger is a more successful attack.
* ``clipscore_drop``: mean CLIPScore against the original prompt of the original images minus
  that of the perturbed images (positive: the perturbation lowered the alignment);
  ``mannwhitney_p``: the one-sided Mann-Whitney U test that the perturbed images' scores are
  stochastically smaller (as ProTIP, Zhang et al. 2024, tests distribution change).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import mannwhitneyu

__all__ = ["median_bandwidth", "gaussian_gram", "mmd2_unbiased", "mmd_permutation_test",
           "kl_surrogate", "clipscore_drop", "mannwhitney_p"]


def _pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"two samples of feature vectors are needed, shapes (n, d) and (m, d); "
                         f"got {x.shape} and {y.shape}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 points per sample; got {len(x)} and "
                         f"{len(y)}: generate more images per query")
    return x, y


def _sq_dists(z: np.ndarray) -> np.ndarray:
    sq = (z * z).sum(1)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * z @ z.T, 0.0)


def median_bandwidth(z: np.ndarray) -> float:
    """The median of the pairwise Euclidean distances between distinct points of ``z`` (the
    median heuristic); 1.0 when every point coincides."""
    d2 = _sq_dists(np.asarray(z, dtype=np.float64))
    iu = np.triu_indices(len(d2), k=1)
    h = float(np.median(np.sqrt(d2[iu]))) if len(iu[0]) else 0.0
    return h if h > 0 else 1.0


def gaussian_gram(z: np.ndarray, bandwidth: float) -> np.ndarray:
    """``K[i, j] = exp(-|z_i - z_j|² / (2 bandwidth²))``."""
    return np.exp(-_sq_dists(z) / (2.0 * bandwidth * bandwidth))


def _mmd2_from_gram(k: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD² of the points ``a`` against ``b`` (index arrays into the pooled gram)."""
    n, m = len(a), len(b)
    kxx, kyy, kxy = k[np.ix_(a, a)], k[np.ix_(b, b)], k[np.ix_(a, b)]
    return float((kxx.sum() - np.trace(kxx)) / (n * (n - 1))
                 + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2.0 * kxy.mean())


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, bandwidth: float | None = None
                  ) -> tuple[float, float]:
    """(unbiased MMD², bandwidth) of samples ``x`` (n, d) and ``y`` (m, d) with a Gaussian
    kernel; ``bandwidth`` None: the median heuristic on the pooled sample."""
    x, y = _pair(x, y)
    z = np.concatenate([x, y])
    h = median_bandwidth(z) if bandwidth is None else float(bandwidth)
    if not h > 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth!r}")
    k = gaussian_gram(z, h)
    return _mmd2_from_gram(k, np.arange(len(x)), np.arange(len(x), len(z))), h


def mmd_permutation_test(x: np.ndarray, y: np.ndarray, n_permutations: int = 1000, seed: int = 0,
                         bandwidth: float | None = None) -> tuple[float, float]:
    """(MMD², p-value) of the permutation test of ``x`` and ``y`` having one distribution:
    ``p = (1 + #{permuted MMD² >= observed}) / (1 + n_permutations)``. The bandwidth (median
    heuristic on the pooled sample unless given) is fixed across permutations."""
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, (int, np.integer)) \
            or n_permutations < 1:
        raise ValueError(f"n_permutations must be a whole number >= 1, got {n_permutations!r}")
    x, y = _pair(x, y)
    z = np.concatenate([x, y])
    h = median_bandwidth(z) if bandwidth is None else float(bandwidth)
    k = gaussian_gram(z, h)
    n = len(x)
    observed = _mmd2_from_gram(k, np.arange(n), np.arange(n, len(z)))
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(int(n_permutations)):
        p = rng.permutation(len(z))
        hits += _mmd2_from_gram(k, p[:n], p[n:]) >= observed - 1e-12 * abs(observed)
    return observed, (1.0 + hits) / (1.0 + n_permutations)


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def kl_surrogate(image_emb_perturbed: np.ndarray, text_emb_original: np.ndarray,
                 text_emb_perturbed: np.ndarray, alpha: float) -> float:
    """``alpha mean_i h(x_i)ᵀ (g(c') - g(c))`` with ``x_i`` the perturbed prompt's images: the
    CLIP estimate of ``KL(p(x | c') || p(x | c))`` up to the prompts' prior (module doc).
    Embeddings are L2-normalised here."""
    h = _unit(image_emb_perturbed).mean(0)
    return float(alpha * h @ (_unit(text_emb_perturbed) - _unit(text_emb_original)))


def clipscore_drop(scores_original: np.ndarray, scores_perturbed: np.ndarray) -> float:
    """Mean CLIPScore (against the original prompt) of the original images minus that of the
    perturbed images."""
    return float(np.mean(scores_original) - np.mean(scores_perturbed))


def mannwhitney_p(scores_original: np.ndarray, scores_perturbed: np.ndarray) -> float:
    """One-sided Mann-Whitney U p-value that the perturbed images' CLIPScores (against the
    original prompt) are stochastically smaller than the original images'."""
    a = np.asarray(scores_original, dtype=np.float64)
    b = np.asarray(scores_perturbed, dtype=np.float64)
    return float(mannwhitneyu(a, b, alternative="greater").pvalue)
