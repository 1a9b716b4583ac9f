-- $1 ids. Cancels incomplete jobs that are not running; returns those plus the ids of
-- executing ones (which are signalled instead, and keep their state until they return).
WITH targets AS MATERIALIZED (
  SELECT id, state
  FROM {prefix}.oban_jobs
  WHERE id = ANY($1::bigint[])
    AND state IN ('available', 'scheduled', 'retryable', 'suspended', 'executing')
  FOR UPDATE
), cancelled AS (
  UPDATE {prefix}.oban_jobs AS j
  SET state = 'cancelled',
      cancelled_at = timezone('UTC', now()),
      meta = COALESCE(j.meta, '{}') || jsonb_build_object(
        'cancel_attempted_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
      )
  FROM targets AS t
  WHERE j.id = t.id AND t.state <> 'executing'
  RETURNING j.id
)
SELECT id, false FROM cancelled
UNION ALL
SELECT id, true FROM targets WHERE state = 'executing'
