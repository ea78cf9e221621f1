"""Building blocks of the simulated registries: clusters, cluster effects, draws, gaps.

Every generator in :mod:`hmlib.simulate` is a short recipe over these blocks:
draw the cluster sizes, draw cluster effects, draw patient covariates, form
a linear predictor, draw the outcome from it, then make values missing (by a
mechanism with cluster-level variation and covariate dependence, and by
structural gaps: clusters that never record a variable).

Each block takes the ``numpy.random.Generator`` it draws from as its first
argument and makes exactly the draws its docstring states, in that order; a
generator's data depend on the order of the blocks it calls, so a block never
draws more than it says. Blocks that draw nothing take no ``rng``.

Terms
-----
cluster index
    The integer code ``0 .. J - 1`` of each patient's cluster (site, ward,
    school); ``effect[cluster]`` spreads a per-cluster vector over patients.
linear predictor
    ``eta``, the sum of fixed effects and cluster effects on the link scale;
    the generators write it out, the blocks only draw from it.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

__all__ = [
    "cluster_index",
    "cluster_labels",
    "equal_cluster_sizes",
    "stratified_lognormal_cluster_sizes",
    "lognormal_cluster_sizes",
    "multinomial_cluster_sizes",
    "scaled_uniform_cluster_sizes",
    "random_cluster_assignment",
    "normal_cluster_effects",
    "correlated_normal_effects",
    "correlated_cluster_effect",
    "standardise",
    "uncorrelated_scores",
    "exactly_correlated_scores",
    "clustered_normal",
    "bernoulli",
    "logistic_draws",
    "gaussian_draws",
    "with_gaps",
    "lowest_clusters",
    "exact_missing_counts",
    "random_gaps",
]


# --------------------------------------------------------------------------
# Clusters
# --------------------------------------------------------------------------
def cluster_index(sizes) -> np.ndarray:
    """Cluster code of each patient, clusters in order: ``0`` repeated ``sizes[0]`` times, ...

    Parameters
    ----------
    sizes : array-like of int
        Patients per cluster.

    Returns
    -------
    numpy.ndarray of int
        Length ``sum(sizes)``.

    Examples
    --------
    >>> cluster_index([2, 1]).tolist()
    [0, 0, 1]
    """
    sizes = np.asarray(sizes)
    return np.repeat(np.arange(sizes.size), sizes)


def cluster_labels(n_clusters: int, prefix: str, *, start: int = 0, width: int = 2) -> np.ndarray:
    """Labels ``f"{prefix}{j:0{width}d}"`` for ``j = start, ..., start + n_clusters - 1``.

    Examples
    --------
    >>> cluster_labels(3, "S").tolist()
    ['S00', 'S01', 'S02']
    >>> cluster_labels(2, "Site ", start=1).tolist()
    ['Site 01', 'Site 02']
    """
    return np.array([f"{prefix}{j:0{width}d}" for j in range(start, start + n_clusters)])


def equal_cluster_sizes(n_clusters: int, per_cluster: int) -> np.ndarray:
    """``n_clusters`` clusters of ``per_cluster`` patients (no draw)."""
    return np.full(n_clusters, per_cluster)


def stratified_lognormal_cluster_sizes(rng: np.random.Generator, n_patients: int, n_clusters: int, *,
                                       log_sd: float, score_clip: float, min_size: int) -> np.ndarray:
    """Lognormal cluster sizes from stratified quantiles, summing exactly to ``n_patients``.

    ``w_j = exp(log_sd * clip(Phi^-1(q_j), -score_clip, score_clip))`` with
    ``q_j`` uniform in the ``j``-th of ``J`` equal probability strata (so the
    smallest and largest clusters are always in the tails), randomly
    permuted, then ``n_patients - J min_size`` patients shared in proportion
    to ``w`` by largest remainders, plus ``min_size`` each.

    Draws: ``rng.uniform(size=J)``, then ``rng.permutation(J)``.

    Parameters
    ----------
    rng : numpy.random.Generator
    n_patients, n_clusters : int
    log_sd : float
        SD of the log sizes before clipping.
    score_clip : float
        Normal scores are clipped to ``+/- score_clip``.
    min_size : int
        Patients every cluster has at least.

    Returns
    -------
    numpy.ndarray of int64
        ``n_clusters`` sizes, sum ``n_patients``.
    """
    quantiles = (np.arange(n_clusters) + rng.uniform(size=n_clusters)) / n_clusters
    scores = np.clip(stats.norm.ppf(quantiles), -score_clip, score_clip)
    weights = np.exp(log_sd * scores)
    weights = weights[rng.permutation(n_clusters)]
    spare = n_patients - min_size * n_clusters
    exact = spare * weights / weights.sum()
    sizes = np.floor(exact).astype(np.int64)
    # Largest remainders get the patients lost to rounding down.
    short = spare - int(sizes.sum())
    order = np.argsort(-(exact - sizes), kind="stable")
    sizes[order[:short]] += 1
    return sizes + min_size


def lognormal_cluster_sizes(rng: np.random.Generator, n_patients: int, n_clusters: int, *,
                            log_sd: float, min_size: int) -> np.ndarray:
    """Lognormal cluster sizes ``max(min_size, floor(n w_j / sum w))``, ``w_j = exp(N(0, log_sd^2))``.

    The total is close to, not exactly, ``n_patients`` (rounding down, and
    the floor of ``min_size``). Draws: ``rng.normal(0, log_sd, J)``.

    Returns
    -------
    numpy.ndarray of int
    """
    weights = np.exp(rng.normal(0.0, log_sd, n_clusters))
    return np.maximum(min_size, np.floor(weights / weights.sum() * n_patients)).astype(int)


def multinomial_cluster_sizes(rng: np.random.Generator, n_patients: int, n_clusters: int, *,
                              min_size: int) -> np.ndarray:
    """``min_size`` patients per cluster plus a multinomial share of the rest (equal probabilities).

    Sizes sum exactly to ``n_patients``. Draws: one ``rng.multinomial``.
    """
    return rng.multinomial(n_patients - min_size * n_clusters, np.full(n_clusters, 1 / n_clusters)) + min_size


def scaled_uniform_cluster_sizes(rng: np.random.Generator, n_patients: int, n_clusters: int, *,
                                 low: int, high: int) -> np.ndarray:
    """Uniform integer weights ``low .. high`` scaled to about ``n_patients``, at least 1 each.

    ``max(1, round(w_j n / sum w))``; the total is within rounding of
    ``n_patients``. Draws: ``rng.integers(low, high + 1, J)``.
    """
    sizes = rng.integers(low, high + 1, n_clusters)
    return np.maximum(1, np.round(sizes * n_patients / sizes.sum()).astype(int))


def random_cluster_assignment(rng: np.random.Generator, n: int, n_clusters: int) -> np.ndarray:
    """Cluster code of each of ``n`` rows, uniform over ``0 .. n_clusters - 1`` (rows not grouped).

    Draws: ``rng.integers(0, n_clusters, size=n)``.
    """
    return rng.integers(0, n_clusters, size=n)


# --------------------------------------------------------------------------
# Cluster effects
# --------------------------------------------------------------------------
def normal_cluster_effects(rng: np.random.Generator, n_clusters: int, sd: float) -> np.ndarray:
    """Random intercepts ``u_j ~ N(0, sd^2)``, one per cluster (``sd = 0`` still draws).

    Draws: ``rng.normal(0, sd, n_clusters)``, which equals ``sd *
    rng.normal(size=n_clusters)`` bit for bit.
    """
    return rng.normal(0.0, sd, n_clusters)


def correlated_normal_effects(rng: np.random.Generator, n_clusters: int, rho: float) -> np.ndarray:
    """Two standard normal effects per cluster with correlation ``rho``.

    Returns
    -------
    numpy.ndarray, shape (n_clusters, 2)
        Draws: one ``rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], n_clusters)``.
    """
    return rng.multivariate_normal([0, 0], [[1, rho], [rho, 1]], n_clusters)


def correlated_cluster_effect(rng: np.random.Generator, effect: np.ndarray, effect_sd: float,
                              rho: float) -> np.ndarray:
    """A standard normal cluster effect correlated ``rho`` (in expectation) with ``effect``.

    ``d_j = rho u_j / sd_u + sqrt(1 - rho^2) z_j``, ``z_j ~ N(0, 1)``, where
    ``u_j ~ N(0, sd_u^2)`` is ``effect``. Draws: ``rng.normal(size=J)``.

    See Also
    --------
    exactly_correlated_scores : the same with the sample correlation exactly ``rho``.
    """
    return rho * effect / effect_sd + np.sqrt(1.0 - rho**2) * rng.normal(size=effect.size)


def standardise(x: np.ndarray) -> np.ndarray:
    """``(x - mean) / SD`` with the population SD (``ddof = 0``)."""
    return (x - x.mean()) / x.std()


def uncorrelated_scores(rng: np.random.Generator, size: int, against) -> np.ndarray:
    """Normal draws made exactly uncorrelated (in sample) with each vector of ``against``.

    The centred draws are projected off ``[1, *against]`` (Gram-Schmidt by
    least squares) and scaled to SD 1 (``ddof = 0``). Draws:
    ``rng.normal(size=size)``.

    Returns
    -------
    numpy.ndarray
        Mean 0, SD 1, sample correlation 0 with each vector of ``against``.
    """
    z = rng.normal(size=size)
    basis = np.column_stack([np.ones(size), *against])
    z = z - basis @ np.linalg.lstsq(basis, z, rcond=None)[0]
    return z / z.std()


def exactly_correlated_scores(rng: np.random.Generator, effect: np.ndarray, rho: float) -> np.ndarray:
    """Scores of mean 0 and SD 1 whose sample correlation with ``effect`` is exactly ``rho``.

    ``rho standardise(effect) + sqrt(1 - rho^2) uncorrelated_scores(effect)``.
    Draws: those of :func:`uncorrelated_scores` (``rng.normal(size=J)``).
    """
    return rho * standardise(effect) + np.sqrt(1.0 - rho**2) * uncorrelated_scores(rng, effect.size, [effect])


def clustered_normal(rng: np.random.Generator, cluster: np.ndarray, n_clusters: int, icc: float) -> np.ndarray:
    """A standard normal patient variable with intraclass correlation ``icc``.

    ``x_ij = sqrt(icc) a_j + sqrt(1 - icc) e_ij``, ``a_j, e_ij ~ N(0, 1)``:
    variance 1, of which the share ``icc`` lies between clusters. Draws:
    ``rng.normal(size=n_clusters)``, then ``rng.normal(size=n)``.
    """
    return np.sqrt(icc) * rng.normal(size=n_clusters)[cluster] + np.sqrt(1 - icc) * rng.normal(size=cluster.size)


# --------------------------------------------------------------------------
# Outcome and missingness draws
# --------------------------------------------------------------------------
def bernoulli(rng: np.random.Generator, probability, size: int) -> np.ndarray:
    """``size`` Bernoulli draws (bool) with ``probability`` (a scalar or one per draw).

    Draws: ``rng.random(size)`` (equal bit for bit to ``rng.uniform(size=size)``).
    """
    return rng.random(size) < probability


def logistic_draws(rng: np.random.Generator, eta: np.ndarray) -> np.ndarray:
    """Bernoulli draws (bool) with ``P = expit(eta)``: a binary outcome, or a missingness indicator.

    ``scipy.special.expit`` and ``1 / (1 + exp(-eta))`` differ in the last
    bit for about 2% of values; a draw can change only if the uniform falls
    between the two (probability about 2^-53 each), and the data of every
    seed the tests and benchmarks use were checked to be unchanged by the
    switch to ``expit``. Draws: ``rng.random(eta.size)``.
    """
    return rng.random(eta.size) < special.expit(eta)


def gaussian_draws(rng: np.random.Generator, eta: np.ndarray, sd: float = 1.0) -> np.ndarray:
    """A gaussian outcome ``eta + N(0, sd^2)``. Draws: ``rng.normal(0, sd, eta.size)``."""
    return eta + rng.normal(0.0, sd, eta.size)


# --------------------------------------------------------------------------
# Gaps
# --------------------------------------------------------------------------
def with_gaps(values: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """``values`` with ``NaN`` where ``missing`` (a float copy; no draw)."""
    return np.where(missing, np.nan, values)


def lowest_clusters(score: np.ndarray, eligible: np.ndarray, k: int) -> np.ndarray:
    """Mask of the ``k`` eligible clusters with the lowest ``score`` (structural gaps; no draw).

    Parameters
    ----------
    score : numpy.ndarray
        One value per cluster (for example documentation quality).
    eligible : numpy.ndarray of bool
        Clusters that may be chosen (for example: at least 20 patients).
    k : int

    Returns
    -------
    numpy.ndarray of bool
        One per cluster; ties keep cluster order.
    """
    candidates = np.flatnonzero(eligible)
    chosen = np.zeros(score.size, dtype=bool)
    chosen[candidates[np.argsort(score[candidates], kind="stable")[:k]]] = True
    return chosen


def exact_missing_counts(rng: np.random.Generator, counts, per_cluster: int) -> np.ndarray:
    """Mask with exactly ``counts[j]`` of the ``per_cluster`` patients of cluster ``j`` missing.

    Clusters are consecutive blocks of ``per_cluster`` rows. Draws, cluster by
    cluster: ``rng.choice(per_cluster, counts[j], replace=False)``.
    """
    missing = np.zeros(len(counts) * per_cluster, dtype=bool)
    for j, k in enumerate(counts):
        missing[j * per_cluster + rng.choice(per_cluster, k, replace=False)] = True
    return missing


def random_gaps(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Mask with exactly ``k`` of ``n`` rows missing, chosen at random.

    Draws: ``rng.choice(n, k, replace=False)``.
    """
    missing = np.zeros(n, dtype=bool)
    missing[rng.choice(n, k, replace=False)] = True
    return missing
