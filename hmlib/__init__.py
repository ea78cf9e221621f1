"""hmlib: audit-ready reports on missing data in hierarchical clinical models.

The report is a fixed sequence of parameterised notebooks (``notebooks/``),
one per step, executed by :mod:`hmlib.report.runner`. The package has four
wings, with dependencies in one direction (report -> steps -> figures, stats):

- :mod:`hmlib.stats`    the statistics engine (mixed models, missingness
  analyses, imputation, pooling, the joint model); imports no other wing
- :mod:`hmlib.figures`  one style module and one figure module per step
- :mod:`hmlib.steps`    one module per step and the one step registry
  (:data:`hmlib.steps.STEPS`); each step writes its own typed artifact
- :mod:`hmlib.report`   running the notebooks, the summary, rendering

beside the shared contracts: :mod:`hmlib.params` (the params YAML),
:mod:`hmlib.data` (reading and checking the extract), :mod:`hmlib.privacy`
(small-cell suppression), :mod:`hmlib.results` (``estimates.csv``),
:mod:`hmlib.artifacts` (typed step artifacts), :mod:`hmlib.settings` (fast and
full run sizes), :mod:`hmlib.methods` (the analysis methods compared),
:mod:`hmlib.wording` and :mod:`hmlib.simulate` (simulated registries with
known truth).
"""

__version__ = "0.1.0"
