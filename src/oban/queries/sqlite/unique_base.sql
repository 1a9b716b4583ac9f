-- The highest id oban_jobs has used (AUTOINCREMENT never reuses one): new ids go above it.
SELECT max(
  COALESCE((SELECT seq FROM sqlite_sequence WHERE name = '{table_prefix}oban_jobs'), 0),
  COALESCE((SELECT max(id) FROM {table_prefix}oban_jobs), 0)
)
