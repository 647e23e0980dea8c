"""Scoring trained results: per-case metrics under nnU-Net's label rule, paired statistics, the ``compare``
report and figures, the ``dice`` of a folder, and the paper's feature analysis.

labels (which labels or regions count, and the ignore label) -> metrics (one case) -> scoring (cached, parallel)
-> statistics -> report and figures; cases and external gather what compare scores.
"""
