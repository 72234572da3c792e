"""Evaluating classifiers: the test report (``report.md``, ``metrics.json``), the paired
comparison of two models and external validation on another source's data.

This ``__init__`` imports nothing, so that importing one module does not load the others.
"""
