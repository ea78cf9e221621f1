"""Design arrays for the random-intercept fitter (:mod:`hmlib.stats.mixed`): ``y, X, groups`` with known truth.

The fitter's tests and its timing benchmark need data at the level of the
model, not of a registry: an outcome vector, a design matrix with an
intercept column and a cluster code per row. All draws come from one
``numpy.random.default_rng(seed)`` in the order the docstrings state.

Generators
----------
mixed_model_data
    Equal clusters plus optional singleton clusters, one gaussian predictor,
    a gaussian *or* binary outcome (the fitter's tests).
large_mixed_model_data
    Rows assigned to clusters at random, several predictors, a binary *and*
    a gaussian outcome from the same linear predictor (``bench/bench_mixed.py``).
"""

from __future__ import annotations

import numpy as np

from hmlib.simulate.blocks import (cluster_index, equal_cluster_sizes, gaussian_draws, logistic_draws,
                                   normal_cluster_effects, random_cluster_assignment)

__all__ = ["mixed_model_data", "mixed_model_data_truth", "large_mixed_model_data", "large_mixed_model_data_truth"]


def mixed_model_data(seed: int, *, family: str, n_clusters: int = 40, per_cluster: int = 15,
                     beta=(1.0, 0.5), sd: float = 0.7, residual_sd: float = 1.0,
                     singletons: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A clustered data set with known truth for ``fit_random_intercept``.

    Model, in draw order: ``X = [1, x]`` with ``x ~ N(0, 1)``; cluster
    intercepts ``u_j ~ N(0, sd^2)`` for the ``n_clusters`` clusters of
    ``per_cluster`` rows and the ``singletons`` clusters of one row; ``eta =
    X beta + u_j``; gaussian ``y = eta + N(0, residual_sd^2)``, binomial
    ``y ~ Bernoulli(expit(eta))``.

    Parameters
    ----------
    seed : int
    family : {"gaussian", "binomial"}
    n_clusters, per_cluster : int, default 40 and 15
    beta : pair of float, default (1.0, 0.5)
        Intercept and slope.
    sd : float, default 0.7
        Cluster SD.
    residual_sd : float, default 1.0
        Gaussian only.
    singletons : int, default 0
        Extra clusters of one row each, after the others.

    Returns
    -------
    y : numpy.ndarray
        Float outcome.
    X : numpy.ndarray, shape (n, 2)
    groups : numpy.ndarray of int
        Cluster codes ``0 .. n_clusters + singletons - 1``.

    Examples
    --------
    >>> y, X, groups = mixed_model_data(1, family="binomial", n_clusters=5, per_cluster=10)
    >>> X.shape, int(groups.max())
    ((50, 2), 4)
    """
    rng = np.random.default_rng(seed)
    groups = np.r_[cluster_index(equal_cluster_sizes(n_clusters, per_cluster)), n_clusters + np.arange(singletons)]
    n = groups.size
    X = np.column_stack([np.ones(n), rng.normal(size=n)])
    eta = X @ np.asarray(beta) + normal_cluster_effects(rng, n_clusters + singletons, sd)[groups]
    if family == "gaussian":
        y = gaussian_draws(rng, eta, residual_sd)
    else:
        y = logistic_draws(rng, eta).astype(float)
    return y, X, groups


def mixed_model_data_truth(*, family: str, beta=(1.0, 0.5), sd: float = 0.7, residual_sd: float = 1.0) -> dict:
    """Values that generated :func:`mixed_model_data` (``terms`` named ``Intercept``, ``x``)."""
    truth = {"generator": "hmlib.simulate.mixed_model.mixed_model_data", "family": family,
             "terms": {"Intercept": float(beta[0]), "x": float(beta[1]), "sd(cluster)": sd}}
    if family == "gaussian":
        truth["residual_sd"] = residual_sd
    return truth


def large_mixed_model_data(n: int, n_clusters: int, n_predictors: int, *,
                           seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A registry-sized design with a binary and a gaussian outcome from one linear predictor.

    Model, in draw order: each row's cluster uniform over ``n_clusters``;
    ``X = [1, x_1 .. x_p]`` with ``x_k ~ N(0, 1)``; ``beta = (-1.5,
    linspace(0.5, -0.3, p))``; cluster intercepts ``u_j ~ N(0, 0.8^2)``;
    ``eta = X beta + u_j``; ``y_bin ~ Bernoulli(expit(eta))``, then ``y_gauss
    = eta + N(0, 1.5^2)``.

    Returns
    -------
    X : numpy.ndarray, shape (n, n_predictors + 1)
    y_bin, y_gauss : numpy.ndarray
    groups : numpy.ndarray of int
    """
    rng = np.random.default_rng(seed)
    groups = random_cluster_assignment(rng, n, n_clusters)
    X = np.column_stack([np.ones(n), rng.normal(size=(n, n_predictors))])
    beta = np.r_[-1.5, np.linspace(0.5, -0.3, n_predictors)]
    eta = X @ beta + normal_cluster_effects(rng, n_clusters, 0.8)[groups]
    y_bin = logistic_draws(rng, eta).astype(float)
    y_gauss = gaussian_draws(rng, eta, 1.5)
    return X, y_bin, y_gauss, groups


def large_mixed_model_data_truth(n_predictors: int) -> dict:
    """Values that generated :func:`large_mixed_model_data`: ``beta``, cluster and residual SDs."""
    beta = np.r_[-1.5, np.linspace(0.5, -0.3, n_predictors)]
    return {"generator": "hmlib.simulate.mixed_model.large_mixed_model_data",
            "beta": [float(b) for b in beta], "sd(cluster)": 0.8, "residual_sd_gaussian": 1.5}
