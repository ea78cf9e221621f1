"""hmlib: audit-ready reports on missing data in hierarchical clinical models.

The report is a fixed sequence of parameterised notebooks (``notebooks/``)
executed by :mod:`hmlib.runner`; the statistics live in the modules here:

- :mod:`hmlib.params`      the params YAML contract and its validation
- :mod:`hmlib.data`        reading and checking the registry extract
- :mod:`hmlib.design`      coding predictors into design matrices
- :mod:`hmlib.mixed`       the random-intercept model fitter (ML; Laplace / AGHQ)
- :mod:`hmlib.missingness` step 1: where and how data are missing, by cluster
- :mod:`hmlib.privacy`     small-cell suppression and cluster pseudonyms
- :mod:`hmlib.demo`        the synthetic trauma registry with known truth
- :mod:`hmlib.results`     the ``estimates.csv`` contract shared by all steps
"""

__version__ = "0.1.0"
