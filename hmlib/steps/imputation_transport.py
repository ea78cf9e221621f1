"""Step 3's transport check, run on the registry and published with small counts suppressed.

The check itself (mask each cluster's observed values of the focus variable,
impute them from the other clusters, compare) is statistics:
:mod:`hmlib.stats.transport`. This module is the step's side of it:

- :func:`transport_check` runs it with the roles, kinds, seed and run sizes
  of a registry (sizes from :func:`hmlib.settings.run_sizes`:
  ``transport_imputations``, ``transport_iterations``);
- :func:`publish_transport` applies the privacy rule: the per-cluster table
  loses its mean observed and mean imputed values, and each cluster's count
  of masked values below ``min_cell`` is suppressed
  (:func:`hmlib.privacy.suppress_counts`, with complementary suppression),
  together with the statistics computed from it (bias, coverage);
- :class:`PublishedTransport` is what the step's result, its artifact, its
  figures and its notebook read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

from hmlib.privacy import suppress_counts
from hmlib.settings import run_sizes
from hmlib.steps.disclosure import hidden_counts
from hmlib.stats.transport import TransportResult, transport_check_frame

__all__ = ["PublishedTransport", "publish_transport", "transport_check", "COUNT_DERIVED"]

#: Published columns hidden together with a suppressed count of masked values.
COUNT_DERIVED = ("n_observed", "bias", "bias_sd", "bias_mc_se", "draw_sd", "coverage")
#: Internal columns never published: the mean of a cluster's observed (and imputed) values.
INTERNAL_COLUMNS = ("mean_observed", "mean_imputed")


@dataclass(eq=False)
class PublishedTransport:
    """A transport check as the report shows it.

    Attributes
    ----------
    check : hmlib.stats.transport.TransportResult
        The check, with its internal (unsuppressed) table.
    display : pandas.DataFrame
        The published table: ``cluster, method, n_observed, bias, bias_sd,
        bias_mc_se, draw_sd, coverage, flagged, reason``, counts below
        ``min_cell`` and the statistics computed from them replaced by the
        suppression label.
    min_cell : int
        Small-cell threshold applied.
    """

    check: TransportResult
    display: pd.DataFrame = field(repr=False)
    min_cell: int

    @property
    def focus(self) -> str:
        """The variable checked."""
        return self.check.focus

    @property
    def methods(self) -> tuple:
        """Method labels checked."""
        return self.check.methods

    @property
    def table(self) -> pd.DataFrame:
        """The internal per-cluster table (:attr:`hmlib.stats.transport.TransportResult.table`); not for display."""
        return self.check.table

    @property
    def n_checked(self) -> int:
        """Clusters checked."""
        return self.check.n_checked

    @property
    def bias_threshold(self) -> float:
        """Flagging threshold of the bias, in SDs of the variable."""
        return self.check.bias_threshold

    @property
    def coverage_threshold(self) -> float:
        """Flagging threshold of the coverage of the imputation intervals."""
        return self.check.coverage_threshold

    @property
    def level(self) -> float:
        """Level of the imputation intervals."""
        return self.check.level

    def flagged(self, method: str) -> list:
        """Labels of the clusters flagged for ``method``, largest |bias| first."""
        return self.check.flagged(method)

    def narrative(self) -> list[str]:
        """The check's sentences (:meth:`hmlib.stats.transport.TransportResult.narrative`)."""
        return self.check.narrative()

    def wide(self) -> pd.DataFrame:
        """Published table, one row per cluster, columns per method, as text (for display)."""
        if not len(self.display):
            return pd.DataFrame(columns=["cluster", "n_observed"])

        def fmt(value, pattern):
            return value if isinstance(value, str) or pd.isna(value) else pattern.format(value)

        parts = []
        for method in self.methods:
            sub = self.display.loc[self.display["method"] == method].set_index("cluster")
            shown = pd.DataFrame({
                f"{method}: bias (SD)": [fmt(v, "{:+.2f}") for v in sub["bias_sd"]],
                f"{method}: coverage": [fmt(v, "{:.0%}") for v in sub["coverage"]],
                f"{method}: flagged": ["yes: " + r if f else "" for f, r in zip(sub["flagged"], sub["reason"])],
            }, index=sub.index)
            parts.append(shown)
        counts = self.display.drop_duplicates("cluster").set_index("cluster")[["n_observed"]]
        return pd.concat([counts, *parts], axis=1).reset_index()

    def to_dict(self) -> dict:
        """JSON-ready aggregates: the check's (:meth:`~hmlib.stats.transport.TransportResult.to_dict`),
        the published table and ``min_cell``."""
        table = self.display.assign(cluster=self.display["cluster"].astype(str))
        return {**self.check.to_dict(), "min_cell": self.min_cell, "table": table.to_dict(orient="records")}


def publish_transport(check: TransportResult, min_cell: int, hidden=None) -> PublishedTransport:
    """Suppress small per-cluster counts and what is computed from them (module docstring).

    Parameters
    ----------
    check : hmlib.stats.transport.TransportResult
    min_cell : int
        Counts of masked values below this are suppressed.
    hidden : hmlib.steps.disclosure.HiddenCounts, optional
        Step 1's decision: a cluster whose count of the focus variable step 1
        hides is hidden here too (the recorded count beside step 1's cluster
        size would give back the hidden missing count).

    Returns
    -------
    PublishedTransport
    """
    table = check.table
    if not len(table):
        display = table.drop(columns=list(INTERNAL_COLUMNS), errors="ignore")
        return PublishedTransport(check=check, display=display, min_cell=int(min_cell))
    per_cluster = table.drop_duplicates("cluster")[["cluster", "n_observed"]].reset_index(drop=True)
    given = None if hidden is None else hidden.mask(per_cluster, {"n_observed": check.focus})
    safe = suppress_counts(per_cluster, ["n_observed"], min_cell, hidden=given)
    hidden = dict(zip(per_cluster["cluster"], safe.mask["n_observed"].to_numpy()))
    out = table.drop(columns=list(INTERNAL_COLUMNS)).astype({c: object for c in COUNT_DERIVED})
    rows = out["cluster"].map(hidden).to_numpy(dtype=bool)
    for col in COUNT_DERIVED:
        out.loc[rows, col] = safe.label
    return PublishedTransport(check=check, display=out.reset_index(drop=True), min_cell=int(min_cell))


def transport_check(registry, *, methods: Mapping | None = None, m: int | None = None,
                    iterations: int | None = None, max_clusters: int = 30, **options) -> PublishedTransport:
    """:func:`hmlib.stats.transport.transport_check_frame` on a registry, published.

    Parameters
    ----------
    registry : hmlib.data.Registry
        Roles, kinds, levels and seed; the focus variable is
        ``registry.params.focus``.
    methods : mapping, optional
        ``{label: (engine method, engine options)}``; default
        :data:`hmlib.stats.transport.DEFAULT_TRANSPORT_METHODS`.
    m, iterations : int, optional
        Draws per masked value and iterations of the main imputations made
        when no background is given. Default: the run sizes of the params'
        ``fast`` (:func:`hmlib.settings.run_sizes`: ``transport_imputations``,
        ``transport_iterations``). A draw re-imputes only the focus variable,
        so draws are cheap, and a larger ``m`` keeps the Monte Carlo error of
        each cluster's mean imputed value small (about ``tau / sqrt(m)`` for
        the multilevel method).
    max_clusters : int
        Check at most this many clusters.
    **options
        Further keyword arguments of
        :func:`~hmlib.stats.transport.transport_check_frame` (``backgrounds``,
        thresholds, ``seed``), and ``min_cell`` for the publication (default
        the params' ``privacy.min_cell``).

    Returns
    -------
    PublishedTransport
    """
    p = registry.params
    sizes = run_sizes(bool(getattr(p, "fast", False)))
    min_cell = options.pop("min_cell", p.privacy.min_cell)
    check = transport_check_frame(
        registry.frame, focus=p.focus, cluster=p.cluster, outcome=p.outcome, outcome_family=p.outcome_family,
        predictors=list(p.predictors), kinds=registry.kinds, levels=registry.levels,
        cluster_covariates=list(p.cluster_covariates), higher_levels=list(p.higher_levels),
        random_slopes=list(p.random_slopes), methods=methods,
        max_clusters=max_clusters, m=m or sizes.transport_imputations,
        iterations=iterations or sizes.transport_iterations, seed=options.pop("seed", p.seed), **options)
    return publish_transport(check, min_cell, hidden=hidden_counts(registry))
