-- Whether oban_jobs_unique_index exists (a file installed before unique jobs lacks it until
-- the schema is installed again).
SELECT count(*) FROM sqlite_master
WHERE type = 'index' AND name = '{table_prefix}oban_jobs_unique_index'
