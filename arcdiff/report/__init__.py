"""Reports of a run: score tables for the terminal, and report/report.{md,html} with plots.

``write_report`` reads a run directory (config.json, metrics.jsonl, eval/<split>/) and writes
a markdown and an HTML page with training curves and, for every evaluated task, its test
inputs, the truth and both attempts drawn in the ARC palette. The report is a scorer-side
artefact: it reads the test outputs of the evaluated split to draw the truth. Whatever the run
directory lacks (no evaluation yet, no metrics) is said in the report instead of failing.
"""

from arcdiff.report.compare import write_comparison
from arcdiff.report.tables import compare_table, per_task_table, summary_table
from arcdiff.report.write import write_report

__all__ = ["compare_table", "per_task_table", "summary_table", "write_comparison", "write_report"]
