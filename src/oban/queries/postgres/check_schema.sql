-- $1 schema name. Which oban tables exist, and whether
-- Elixir's oban_peers exists (leases live there, else in oban_leaders).
SELECT
  to_regclass(format('%I.oban_jobs', $1::text)) IS NOT NULL,
  to_regclass(format('%I.oban_producers', $1::text)) IS NOT NULL,
  to_regclass(format('%I.oban_leaders', $1::text)) IS NOT NULL,
  to_regclass(format('%I.oban_peers', $1::text)) IS NOT NULL
