-- $1 ids. Cancels incomplete jobs, running ones included (as Elixir Oban does); returns each
-- with whether it was executing (its node is then signalled to stop it). A running job's
-- errors gain {attempt, at, error}; `errors || object` appends to a jsonb[] (Elixir's
-- schema) and to a jsonb array (oban-py's) alike.
WITH targets AS MATERIALIZED (
  SELECT id, state
  FROM {prefix}.oban_jobs
  WHERE id = ANY($1::bigint[])
    AND state IN ('available', 'scheduled', 'retryable', 'suspended', 'executing')
  FOR UPDATE
)
UPDATE {prefix}.oban_jobs AS j
SET state = 'cancelled',
    cancelled_at = timezone('UTC', now()),
    errors = CASE
      WHEN t.state = 'executing' THEN j.errors || jsonb_build_object(
        'attempt', j.attempt,
        'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'error', $2::text
      )
      ELSE j.errors
    END,
    meta = COALESCE(j.meta, '{}') || jsonb_build_object(
      'cancel_attempted_at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    )
FROM targets AS t
WHERE j.id = t.id
RETURNING j.id, t.state = 'executing'
