"""The parts of ``python -m training.evaluate`` (training/evaluate.py: the command line).

options.py        EvaluateOptions: every setting of one evaluation, checked in one place
arguments.py      the command line's option groups, and EvaluateOptions from parsed arguments
sets.py           the evaluation sets: ``--data`` specs opened as training sources, road fog
scale_sources.py  the metric scale sources a view is scored with (mounting, synthetic LiDAR)
scoring.py        the metrics of one method on one view
run.py            the engines, the loop over sets and views, evaluate()
report.py         per_image.csv, summary.md (tables, header) and the image grids
"""
