"""Random slopes at the cluster level in the joint model: correlated cluster effects with an LKJ prior.

With ``random_slopes=("month",)`` (numeric, complete predictors) the outcome
submodel has, per cluster ``j``, an intercept and one slope per listed
predictor, ``(u_0j, u_1j, ...) ~ N(0, Sigma)`` with an unstructured
covariance ``Sigma = diag(tau) R diag(tau)``: every SD ``tau`` has the
cluster-SD prior of :data:`~hmlib.stats.joint.priors.DEFAULT_PRIORS` and the
correlation matrix ``R`` an ``LKJ(lkj_eta)`` prior (``pm.LKJCholeskyCov``),
as brms's ``(1 + month | patient)`` with ``sd`` and ``cor`` priors. The
slopes act on the standardised predictor (the column of ``Z``), so that the
priors are on standardised scales like every other prior of the model. Each
incomplete continuous or binary predictor's submodel gets the same random
slopes (its own covariance, independent of the outcome's, as brms's ``(1 +
month | patient)`` in two formulae; a binary one's on the logit scale). So
does each incomplete categorical predictor with three or more levels: an
ordinal one, one block on its cumulative-logit scale; a nominal one, one
block per non-reference level, independent between levels (brms's
``categorical`` family with ``(1 + month | patient)``). With the missingness submodel on, its cluster
intercept joins the outcome's effects in one covariance (brms's ``(1 + month
| p | patient)`` in the outcome and ``(1 | p | patient)`` in the missingness
formula): ``cor(missingness, outcome)`` is the correlation with the outcome's
random intercept. The missingness submodel has time as a fixed predictor
whenever the time column is a predictor (it is in ``Z``).

Reporting (:func:`random_part_to_original_scale`). On the standardised
scale the cluster's line is ``u_0 + sum_k u_k (t_k - m_k) / s_k`` (outcome
units of ``s_y``); on the user's scale it is ``u_0' + sum_k u_k' t_k`` with
``u_k' = s_y u_k / s_k`` and ``u_0' = s_y (u_0 - sum_k u_k m_k / s_k)``,
the intercept at ``t = 0`` as in lme4 and :func:`hmlib.stats.mixed.fit_mixed`.
So ``Sigma' = A Sigma A^T`` with that linear map ``A`` (the missingness
effect is not rescaled), draw by draw; the rows are ``sd(<cluster>)``,
``sd(<slope>|<cluster>)``, ``cor(<slope>|<cluster>)`` (with the intercept)
and ``cor(<a>,<b>|<cluster>)`` between slopes, the names of
:func:`hmlib.stats.mixed.fit_mixed`.

With levels above the cluster (``higher_levels``) those levels get random
intercepts, added to the clusters' intercepts in every submodel (brms's
``(1 | site) + (1 + month | site:patient)``; :mod:`hmlib.stats.joint.model`);
the correlated block stays the clusters' own. Not supported (refused by
:func:`~hmlib.stats.joint.data.prepare_joint_data`): slopes on a categorical
or incomplete predictor, and random slopes at the levels above the cluster.

PyMC and PyTensor are imported when a model is built, so that importing
hmlib stays quick.
"""

from __future__ import annotations

import numpy as np

from hmlib.stats.joint.priors import sd_family

__all__ = ["correlated_effects", "cluster_part", "slope_part_draws", "random_part_terms",
           "random_part_to_original_scale", "user_scale_map"]


def correlated_effects(prefix: str, J: int, n: int, priors: dict, centred: bool):
    """``J`` x ``n`` cluster effects with an LKJ covariance (inside a PyMC model context).

    Creates ``<prefix>_chol`` (the packed Cholesky factor, LKJ(``lkj_eta``) correlations and the
    cluster-SD prior on each SD), the deterministics ``<prefix>_stds`` (``n``) and
    ``<prefix>_corr`` (``n`` x ``n``), and the effects ``<prefix>_effects = z L^T`` (``L`` the Cholesky
    factor of ``Sigma``). Non-centred: ``z ~ N(0, 1)`` (``<prefix>_effects_z``, J x n). Centred: the
    intercepts (first column) are drawn directly, ``<prefix>_intercepts ~ N(0, L_00)``, and ``z_0 = u_0 /
    L_00`` with the other columns of ``z`` standard normal, so each slope is the regression on its
    intercept plus a non-centred part (the rule's information share is the intercepts'; a slope is
    informed far less than its intercept by a few visits per cluster).

    Returns
    -------
    effects : tensor, (J, n)
    stds : tensor, (n,)
    corr : tensor, (n, n)
    """
    import pymc as pm
    import pytensor.tensor as pt

    family, kwargs = sd_family(priors["cluster_sd"])
    chol, corr, stds = pm.LKJCholeskyCov(f"{prefix}_chol", eta=float(priors["lkj_eta"]), n=n,
                                         sd_dist=family.dist(**kwargs, shape=n), compute_corr=True,
                                         store_in_trace=False)
    stds = pm.Deterministic(f"{prefix}_stds", stds)
    corr = pm.Deterministic(f"{prefix}_corr", corr)
    if centred:
        # the intercepts drawn directly, the rest given them: z_0 = u_0 / L_00 is standard normal
        intercepts = pm.Normal(f"{prefix}_intercepts", 0.0, chol[0, 0], shape=J)
        z = pm.Normal(f"{prefix}_effects_z", 0.0, 1.0, shape=(J, n - 1))
        z = pt.concatenate([(intercepts / chol[0, 0])[:, None], z], axis=1)
    else:
        z = pm.Normal(f"{prefix}_effects_z", 0.0, 1.0, shape=(J, n))
    effects = pm.Deterministic(f"{prefix}_effects", pt.dot(z, chol.T))
    return effects, stds, corr


def cluster_part(effects, data, q: int):
    """Per row: the cluster's intercept plus its slopes times the standardised slope columns (a tensor).

    ``effects`` is ``J`` x ``(1 + q + ...)``; columns beyond ``1 + q`` (the missingness intercept) are
    ignored.
    """
    design = np.column_stack([np.ones(data.n), data.Z[:, list(data.slope_columns)]])
    return (effects[data.codes][:, :1 + q] * design).sum(axis=1)


def slope_part_draws(post: dict, prefix: str, data, rows: np.ndarray, index: np.ndarray) -> np.ndarray | float:
    """Draws x rows of a submodel's random-slope part ``sum_k u_kj z_ik`` (numpy), 0.0 without slopes.

    ``prefix``: ``outcome``, ``x<k>`` or ``b<k>``; reads ``<prefix>_cluster_slopes`` (chain, draw, J, q).
    """
    name = f"{prefix}_cluster_slopes"
    if not data.slopes or name not in post:
        return 0.0
    values = post[name]
    slopes = values.reshape(-1, *values.shape[2:])[index]                 # draws x J x q
    z = data.Z[rows][:, list(data.slope_columns)]                         # rows x q
    return np.einsum("drq,rq->dr", slopes[:, data.codes[rows], :], z)


def random_part_terms(data) -> list:
    """The summary terms of the random part beyond ``sd(<cluster>)``: slope SDs, then correlations."""
    cluster = data.cluster
    names = list(data.slopes)
    terms = [f"sd({s}|{cluster})" for s in names]
    cols = ["Intercept", *names]
    for a in range(len(cols)):
        for b in range(a + 1, len(cols)):
            terms.append(f"cor({cols[b]}|{cluster})" if a == 0 else f"cor({cols[a]},{cols[b]}|{cluster})")
    return terms


def user_scale_map(data, with_missingness: bool) -> np.ndarray:
    """``A``: (user-scale effects) = ``A`` (standardised effects), intercept first, then the slopes.

    ``u_0' = s_y (u_0 - sum_k u_k m_k / s_k)``, ``u_k' = s_y u_k / s_k``; a trailing missingness
    intercept is left as it is.
    """
    cols = list(data.slope_columns)
    q = len(cols)
    m = data.z_centre[cols]
    s = data.z_scale[cols]
    n = 1 + q + int(with_missingness)
    A = np.eye(n)
    A[0, 1:1 + q] = -m / s
    A[1:1 + q, 1:1 + q] = np.diag(1.0 / s)
    A[:1 + q, :] *= data.y_scale
    return A


def random_part_to_original_scale(data, stds: np.ndarray, corr: np.ndarray) -> dict:
    """The random part on the user's scale, draw by draw (module docstring).

    Parameters
    ----------
    data : JointData
        With ``slopes``.
    stds : numpy.ndarray, (..., n)
        SDs on the standardised scale: intercept, slopes (and the missingness intercept last when
        ``n = 2 + q``).
    corr : numpy.ndarray, (..., n, n)
        Their correlation matrices.

    Returns
    -------
    dict
        ``{term: draws}``: ``sd(<cluster>)`` (the intercept at slope predictors 0), every term of
        :func:`random_part_terms`, and ``corr(missingness, outcome)`` when the missingness intercept
        is there.
    """
    stds = np.asarray(stds, dtype=float)
    corr = np.asarray(corr, dtype=float)
    q = len(data.slopes)
    n = stds.shape[-1]
    with_missingness = n == q + 2
    A = user_scale_map(data, with_missingness)
    cov = stds[..., :, None] * corr * stds[..., None, :]
    user = np.einsum("ij,...jk,lk->...il", A, cov, A)
    sd = np.sqrt(np.clip(np.diagonal(user, axis1=-2, axis2=-1), 0.0, None))
    cor = user / (sd[..., :, None] * sd[..., None, :])
    out = {f"sd({data.cluster})": sd[..., 0]}
    out |= {f"sd({s}|{data.cluster})": sd[..., 1 + k] for k, s in enumerate(data.slopes)}
    cols = ["Intercept", *data.slopes]
    for a in range(1 + q):
        for b in range(a + 1, 1 + q):
            name = f"cor({cols[b]}|{data.cluster})" if a == 0 else f"cor({cols[a]},{cols[b]}|{data.cluster})"
            out[name] = cor[..., b, a]
    if with_missingness:
        out["corr(missingness, outcome)"] = cor[..., n - 1, 0]
    return out
