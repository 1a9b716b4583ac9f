-- $1 schema name. Which oban tables exist, the type of oban_jobs.errors, and whether
-- Elixir's oban_peers exists (leases live there, else in oban_leaders).
SELECT
  to_regclass(format('%I.oban_jobs', $1::text)) IS NOT NULL,
  to_regclass(format('%I.oban_producers', $1::text)) IS NOT NULL,
  to_regclass(format('%I.oban_leaders', $1::text)) IS NOT NULL,
  (SELECT data_type FROM information_schema.columns
   WHERE table_schema = $1::text AND table_name = 'oban_jobs' AND column_name = 'errors'),
  to_regclass(format('%I.oban_peers', $1::text)) IS NOT NULL
