-- $1 instance name. Serialises cron inserts (inside a transaction) across nodes.
SELECT pg_advisory_xact_lock(hashtext('oban_cron'), hashtext($1::text))
