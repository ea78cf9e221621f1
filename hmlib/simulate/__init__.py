"""Simulated registries with known truth: the one home of simulated data.

The demo, the tests and the benchmarks all draw their data from here, so
that a reader finds each data-generating model once, written out in its
docstring, with the values that generated it beside it. Modules, by what they
are for:

- :mod:`hmlib.simulate.blocks`       the building blocks (cluster sizes,
  cluster effects, outcome and missingness draws, structural gaps)
- :mod:`hmlib.simulate.demo`         the demo trauma registry ``hmreport demo`` writes
- :mod:`hmlib.simulate.registries`   small registries for the step, imputation
  and report tests (``small_registry``, ``icc_registry``, ...)
- :mod:`hmlib.simulate.missingness`  registries with a known missingness
  structure, for the diagnostics (``missingness_registry``, ...)
- :mod:`hmlib.simulate.studies`      registry-sized data for the truth studies
  and timing benchmarks (``truth_study_registry``, ``large_registry``,
  ``multi_gap_registry``)
- :mod:`hmlib.simulate.mixed_model`  ``y, X, groups`` arrays for the
  random-intercept fitter (``mixed_model_data``, ``large_mixed_model_data``)
- :mod:`hmlib.simulate.categorical_focus`  registries whose focus is a
  three-level category, missing at random or not at random with a known
  odds ratio (``categorical_focus_registry``)
- :mod:`hmlib.simulate.scale`        registries at the scale of real trials
  and national registries, for the scale benchmarks (``trial_registry``:
  19,435 patients in 466 hospitals in 36 countries, shaped like IST;
  ``scale_registry``: 100,000 to 1,000,000 patients)
- :mod:`hmlib.simulate.longitudinal` visits within patients within sites,
  with a random slope on time, missed visits, dropout driven by the last
  observed outcome and a pilot phase (``longitudinal_registry``, #16)

Every generator takes an explicit ``seed`` and draws from one
``numpy.random.default_rng(seed)`` in the order its docstring states; where
there is a truth, ``<generator>_truth`` returns it (``terms`` keyed as in
hmlib's results contract). The tests' and benchmarks' numbers, and some R
reference numbers, were computed on these draws: changing the order of the
draws or a model value changes them all (``tests/test_simulate.py`` holds
fingerprints of the data in use).
"""
