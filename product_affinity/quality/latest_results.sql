-- Each checked table's results from the latest run that checked it: a run records a table's results in one
-- statement with one checked_at, so a table's latest checked_at names one run.
SELECT asset, run_id, checked_at, rule_id, observed, passed, rows_checked, detail, observed_unit
FROM {results}
QUALIFY checked_at = max(checked_at) OVER (PARTITION BY asset)
