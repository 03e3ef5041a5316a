"""Watching a served model: metrics, the prediction log, drift, reports and alerts.

Drift works on **reference-binned counters** so that it needs no extra infrastructure:

- :mod:`~modelport.monitoring.profile` fits a reference profile once, from training-like data
  (per-feature bin edges and reference counts, categories, moments; the same for outputs).
- :mod:`~modelport.monitoring.drift` counts, per request, how many values fall in each bin
  (vectorised numpy, O(features) per batch) over a rolling window. Counts are plain integers,
  so counts from many workers and replicas add up exactly: fleet-wide drift is exact.
- :mod:`~modelport.monitoring.stats` compares window counts with the reference: PSI,
  Jensen-Shannon, chi-square homogeneity, binned KS and Wasserstein, Benjamini-Hochberg.
- :mod:`~modelport.monitoring.report` renders one self-contained offline HTML report.

Nothing here imports a web framework; ``server/drift_routes.py`` exposes it over HTTP.
"""
