"""Prior sensitivity without refitting: saved posterior draws, reweighted to another cluster-SD prior.

:class:`PosteriorDraws` keeps the draws of the contract terms and of every
cluster SD of a fit (no data row; written by step 4 beside its artifact);
:func:`reweight_cluster_sd_prior` turns them into the posterior under
another prior on the cluster SDs by Pareto-smoothed importance sampling,
reporting Pareto k and the effective number of draws so that a caller refits
only when the weights cannot be trusted (:attr:`PriorReweighting.reliable`).
:func:`model_fingerprint` ties saved draws to the data file and the model.

References
----------
Vehtari A, Simpson D, Gelman A, Yao Y, Gabry J (2024). Pareto smoothed
importance sampling. JMLR 25(72).
Kallioinen N, Paananen T, Buerkner P-C, Vehtari A (2023). Detecting and
diagnosing prior and likelihood sensitivity with power-scaling. Statistics
and Computing 34:57.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hmlib.exceptions import FitError
from hmlib.stats.joint.priors import prior_text, sd_log_density
from hmlib.stats.joint.summaries import GATE, LEVEL, contract_method, draw_diagnostics

__all__ = ["FINGERPRINT_PARAMS", "model_fingerprint", "PosteriorDraws", "PriorReweighting", "reweight_cluster_sd_prior"]

#: The params that define the joint model (with the data file's hash) in :func:`model_fingerprint`.
FINGERPRINT_PARAMS = ("outcome", "outcome_family", "predictors", "categorical", "ordinal", "cluster", "focus",
                      "cluster_covariates", "higher_levels")


def model_fingerprint(registry) -> str:
    """SHA-256 of the input file and of the params that define the joint model.

    Stored with :class:`PosteriorDraws` so that draws saved by one run are
    never reused for another data file or model.

    Parameters
    ----------
    registry : hmlib.data.Registry
        Only its ``data_sha256`` and the params of :data:`FINGERPRINT_PARAMS` are read.
    """
    p = registry.params
    spec = {"data": registry.data_sha256, **{key: getattr(p, key, None) for key in FINGERPRINT_PARAMS}}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class PosteriorDraws:
    """Parameter draws of a joint-model fit, without any data row.

    Written by step 4 (:meth:`save`, a ``.npz`` file of draws of model
    parameters only) and read by step 5 (:meth:`load`) to reweight the
    posterior to other priors on the cluster SDs (:func:`reweight_cluster_sd_prior`).

    Attributes
    ----------
    terms : dict of str to ndarray
        Contract terms (``Intercept``, predictors' terms, ``sd(<cluster>)``),
        original scale, shape (chains, draws).
    cluster_sds : dict of str to ndarray
        Every SD that carries the ``cluster_sd`` prior, on the model's scale
        (the scale the prior is stated on).
    cluster_sd_prior : tuple
        The prior those SDs had, e.g. ``("halfnormal", 1.0)``.
    converged : bool
    convergence_message : str
    n_patients, n_clusters : int
    fingerprint : str
        :func:`model_fingerprint` of the registry the fit belongs to.
    """

    terms: dict
    cluster_sds: dict
    cluster_sd_prior: tuple
    converged: bool
    convergence_message: str
    n_patients: int
    n_clusters: int
    fingerprint: str = ""

    def save(self, path) -> Path:
        """Write the draws to ``path`` (``.npz``; written whole or not at all)."""
        path = Path(path)
        names = {"terms": list(self.terms), "cluster_sds": list(self.cluster_sds)}
        meta = {"names": names, "cluster_sd_prior": list(self.cluster_sd_prior), "converged": bool(self.converged),
                "convergence_message": self.convergence_message, "n_patients": int(self.n_patients),
                "n_clusters": int(self.n_clusters), "fingerprint": self.fingerprint}
        arrays = {f"t{i}": self.terms[k] for i, k in enumerate(names["terms"])}
        arrays |= {f"s{i}": self.cluster_sds[k] for i, k in enumerate(names["cluster_sds"])}
        tmp = path.with_name(path.name + ".partial")
        with open(tmp, "wb") as handle:
            np.savez(handle, meta=np.array(json.dumps(meta)), **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path) -> "PosteriorDraws":
        """Read draws written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            terms = {k: z[f"t{i}"] for i, k in enumerate(meta["names"]["terms"])}
            sds = {k: z[f"s{i}"] for i, k in enumerate(meta["names"]["cluster_sds"])}
        return cls(terms=terms, cluster_sds=sds, cluster_sd_prior=tuple(meta["cluster_sd_prior"]),
                   converged=meta["converged"], convergence_message=meta["convergence_message"],
                   n_patients=meta["n_patients"], n_clusters=meta["n_clusters"], fingerprint=meta["fingerprint"])

    @classmethod
    def load_matching(cls, path, registry) -> "PosteriorDraws | None":
        """:meth:`load` if ``path`` exists and belongs to ``registry``'s data and model, else None."""
        if not Path(path).is_file():
            return None
        draws = cls.load(path)
        return draws if draws.fingerprint == model_fingerprint(registry) else None


@dataclass(frozen=True)
class PriorReweighting:
    """The joint-model posterior reweighted to another cluster-SD prior.

    Attributes
    ----------
    estimates : pandas.DataFrame
        Contract rows (method ``joint_bayes``, or ``joint_bayes:not_converged``
        when the reweighted fit had not converged): weighted posterior mean,
        SD and 95% equal-tailed interval.
    prior : tuple
        The new cluster-SD prior.
    pareto_k : float
        Pareto-smoothed importance sampling diagnostic (Vehtari et al. 2024).
    k_threshold : float
        ``min(1 - 1 / log10(S), 0.7)`` for ``S`` draws; above it the weights
        are not trustworthy and the model should be refitted.
    ess : float
        Effective number of draws of the weights, ``1 / sum(w^2)`` (out of ``n_draws``).
    n_draws : int
    reliable : bool
        ``pareto_k <= k_threshold`` and ``ess`` at least the gate's bulk ESS
        (:data:`~hmlib.stats.joint.summaries.GATE`): enough effective draws to report.
    message : str
    """

    estimates: pd.DataFrame
    prior: tuple
    pareto_k: float
    k_threshold: float
    ess: float
    n_draws: int
    reliable: bool
    message: str


def _weighted_quantile(x: np.ndarray, w: np.ndarray, q: float) -> float:
    if np.all(w == w[0]):
        return float(np.quantile(x, q))          # equal weights: the fit's own (type 7) quantile
    order = np.argsort(x)
    xs, cw = x[order], np.cumsum(w[order])
    centres = cw - w[order] / 2.0             # midpoint rule, as type-7 quantiles do for equal weights
    return float(np.interp(q, centres / cw[-1], xs))


def _psis_weights(log_ratio: np.ndarray) -> tuple[np.ndarray, float]:
    """Normalised Pareto-smoothed weights of the draws and the Pareto k (-inf for equal weights)."""
    from arviz_stats.base import array_stats

    shape = log_ratio.shape
    n_draws = int(np.prod(shape))
    flat_ratio = log_ratio.reshape(-1)
    if np.ptp(flat_ratio) == 0.0:
        return np.full(n_draws, 1.0 / n_draws), -np.inf
    ess_ratio = draw_diagnostics(log_ratio)["ess_bulk"] if shape[0] > 1 else float(n_draws)
    r_eff = float(np.clip(ess_ratio / n_draws, 0.05, 1.0))
    log_w, k = array_stats.psislw(-flat_ratio, r_eff=r_eff)
    weights = np.exp(np.asarray(log_w, dtype=float) - np.max(log_w))
    weights /= weights.sum()
    return weights, float(k)


def reweight_cluster_sd_prior(draws: PosteriorDraws, prior, level: float = LEVEL) -> PriorReweighting:
    """Reweight a joint-model posterior to another prior on its cluster SDs (no refit).

    Every cluster SD of the model (outcome, each incomplete predictor's
    submodel, missingness) had the prior ``draws.cluster_sd_prior``; under
    ``prior`` instead the posterior is proportional to the old one times
    ``prod_k p_new(tau_k) / p_old(tau_k)``. Those ratios, Pareto-smoothed
    (PSIS; arviz-stats), weight the existing draws. The estimate is honest when
    the Pareto ``k`` is at most ``min(1 - 1/log10(S), 0.7)``; above that the
    model should be refitted with the new prior (the caller's decision:
    :attr:`PriorReweighting.reliable`).

    Parameters
    ----------
    draws : PosteriorDraws
    prior : tuple
        ``("halfnormal", scale)`` or ``("halfstudentt", nu, scale)``.
    level : float
        Interval level (default 0.95).

    Returns
    -------
    PriorReweighting

    References
    ----------
    Vehtari et al. (2024); Kallioinen et al. (2023) (module docstring).
    """
    prior = tuple(prior)
    old = tuple(draws.cluster_sd_prior)
    if not draws.cluster_sds:
        raise FitError("the joint-model draws hold no cluster SD to reweight.")
    shape = next(iter(draws.terms.values())).shape
    log_ratio = np.zeros(shape)
    for values in draws.cluster_sds.values():
        ratio = sd_log_density(values, prior) - sd_log_density(values, old)
        # a submodel with one SD per level (nominal categorical) stores them on a last axis
        log_ratio += ratio.reshape(*shape, -1).sum(axis=-1)
    n_draws = int(np.prod(shape))
    weights, k = _psis_weights(log_ratio)
    threshold = float(min(1.0 - 1.0 / math.log10(n_draws), 0.7))
    ess = float(1.0 / np.sum(weights ** 2))
    tail = (1.0 - level) / 2.0
    rows = []
    for term, values in draws.terms.items():
        x = np.asarray(values, dtype=float).reshape(-1)
        mean = float(np.sum(weights * x))
        rows.append({"term": term, "estimate": mean,
                     "std_error": float(math.sqrt(np.sum(weights * (x - mean) ** 2) * n_draws / (n_draws - 1))),
                     "ci_lower": _weighted_quantile(x, weights, tail),
                     "ci_upper": _weighted_quantile(x, weights, 1.0 - tail)})
    table = pd.DataFrame(rows)
    table.insert(0, "method", contract_method(draws.converged))
    table["n_patients"] = draws.n_patients
    table["n_clusters"] = draws.n_clusters
    reliable = bool(k <= threshold and ess >= GATE["ess_bulk_min"])
    k_text = "0" if not np.isfinite(k) else f"{k:.2f}"
    message = (f"posterior of the {prior_text(old)} fit reweighted to the {prior_text(prior)} prior on the cluster "
               f"SDs by Pareto-smoothed importance sampling: Pareto k {k_text} "
               f"({'at most' if k <= threshold else 'above'} {threshold:.2f}), {ess:.0f} effective of {n_draws} draws"
               f"{'' if ess >= GATE['ess_bulk_min'] else ' (fewer than ' + format(GATE['ess_bulk_min'], '.0f') + ')'}")
    return PriorReweighting(estimates=table, prior=prior, pareto_k=k, k_threshold=threshold, ess=ess,
                            n_draws=n_draws, reliable=reliable, message=message + ".")
