-- $1 schema name. Whether oban_jobs_unique_index is valid: NULL when it does not exist, false
-- when a CREATE INDEX CONCURRENTLY that failed left it behind unfinished.
SELECT (
  SELECT i.indisvalid FROM pg_index AS i
  WHERE i.indexrelid = to_regclass(format('%I.oban_jobs_unique_index', $1::text))
)
