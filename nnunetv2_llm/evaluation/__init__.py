"""Scoring trained results: per-case metrics under nnU-Net's label rule, paired statistics, the ``compare``
report and figures, the ``dice`` of a folder, and the paper's feature analysis.

labels (which labels or regions count, and the ignore label) -> metrics (one case) -> scoring (cached, parallel)
-> statistics (over cases), procedure and partitions (over training runs) -> summary (the report as objects) ->
report, figures, layers and efficiency (with plotting and formatting). ``compare`` (compare.py runs the steps):
compare_request (what it is asked, options checked first) -> compare_plan (everything found before any scoring;
compared_runs: partitions, replicates and their cases; cases and external: what is scored) -> run_scores (the
procedure level) -> report_statistics (every statistic of a report); reanalysis does the same from a cases.csv.
``dice``: dice.py. ``analyze`` (analysis.py): analysed_fold (which fold's checkpoint) -> analysis_patches (its input)
-> feature_probe (the features caught) -> feature_metrics -> analysis_figures.
"""
