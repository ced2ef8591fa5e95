"""Evaluation: metrics (JSD, CBC, BPC, RS), reference lines and reports.

Submodules are imported on demand so that ``import pluralign.eval`` stays
cheap; import :mod:`pluralign.eval.metrics` or :mod:`pluralign.eval.reference`
to register the metrics.
"""
