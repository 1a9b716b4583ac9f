-- $1 queues (NULL: every queue), $2 limit, $3 insert channel. The leader's staging: makes
-- due scheduled/retryable jobs available, oldest first.
-- Each row is locked before it moves (SKIP LOCKED: a row another transaction holds waits
-- for the next run) and its state is checked again under the lock, so neither a claim nor
-- a concurrent stager (Elixir's locks nothing) can have a running or finished job made
-- available again by this statement.
-- Then, as Elixir's stager does, every queue with available jobs (staged now or waiting) is
-- notified once, so the producers of every node, Python or Elixir, wake. Returns
-- (queue, jobs staged for it, unique jobs discarded for a held key) for each notified queue.
WITH RECURSIVE due AS MATERIALIZED (
  SELECT id
  FROM {prefix}.oban_jobs
  WHERE state IN ('scheduled', 'retryable')
    AND scheduled_at <= timezone('UTC', now())
    AND ($1::text[] IS NULL OR queue = ANY($1::text[]))
  ORDER BY scheduled_at, id
  LIMIT $2::integer
  FOR UPDATE SKIP LOCKED
), entering AS (
  -- Unique jobs that would take their key by becoming available: available is in their
  -- uniq_bmp, their current state is not (docs/unique.md). The state's number is spelled out
  -- as oban_uniq_state_bit has it (the same expression, so the unique index serves the
  -- lookup below), so that staging also runs on a schema installed before that function.
  SELECT j.id, j.meta->>'uniq_key' AS key, j.scheduled_at
  FROM due JOIN {prefix}.oban_jobs AS j ON j.id = due.id
  WHERE j.meta ? 'uniq_key'
    AND j.meta->'uniq_bmp' @> jsonb '1'
    AND NOT j.meta->'uniq_bmp' @> (CASE j.state
        WHEN 'scheduled' THEN jsonb '0' WHEN 'available' THEN jsonb '1'
        WHEN 'executing' THEN jsonb '2' WHEN 'retryable' THEN jsonb '3'
        WHEN 'completed' THEN jsonb '4' WHEN 'cancelled' THEN jsonb '5'
        WHEN 'discarded' THEN jsonb '6' WHEN 'suspended' THEN jsonb '7'
      END)
), losers AS (
  -- Those whose key another job holds, or that an earlier one of this batch takes: they are
  -- discarded (meta.unique_conflict) instead of failing the whole statement.
  SELECT e.id
  FROM entering AS e
  WHERE EXISTS (
      SELECT 1 FROM {prefix}.oban_jobs AS o
      WHERE o.meta->>'uniq_key' = e.key AND o.id <> e.id
        AND o.meta ? 'uniq_key' AND o.meta->'uniq_bmp' @> (CASE o.state
        WHEN 'scheduled' THEN jsonb '0' WHEN 'available' THEN jsonb '1'
        WHEN 'executing' THEN jsonb '2' WHEN 'retryable' THEN jsonb '3'
        WHEN 'completed' THEN jsonb '4' WHEN 'cancelled' THEN jsonb '5'
        WHEN 'discarded' THEN jsonb '6' WHEN 'suspended' THEN jsonb '7'
      END)
    )
    OR EXISTS (
      SELECT 1 FROM entering AS f
      WHERE f.key = e.key AND (f.scheduled_at, f.id) < (e.scheduled_at, e.id)
    )
), staged AS (
  UPDATE {prefix}.oban_jobs AS j
  SET state = CASE WHEN l.id IS NULL THEN 'available' ELSE 'discarded' END::{prefix}.oban_job_state,
      discarded_at = CASE WHEN l.id IS NULL THEN j.discarded_at ELSE timezone('UTC', now()) END,
      meta = CASE WHEN l.id IS NULL THEN j.meta ELSE j.meta || '{"unique_conflict": "staging"}' END
  FROM due LEFT JOIN losers AS l ON l.id = due.id
  WHERE j.id = due.id AND j.state IN ('scheduled', 'retryable')
  RETURNING j.queue, j.state
), counts AS (
  SELECT queue,
         count(*) FILTER (WHERE state = 'available') AS staged,
         count(*) FILTER (WHERE state = 'discarded') AS conflicts
  FROM staged GROUP BY queue
), waiting (queue) AS (
  -- The distinct queues of available jobs, one index probe per queue (a loose index scan
  -- of the state/queue index) rather than a pass over every available job.
  (SELECT queue FROM {prefix}.oban_jobs WHERE state = 'available' ORDER BY queue LIMIT 1)
  UNION ALL
  SELECT (SELECT j.queue FROM {prefix}.oban_jobs AS j
          WHERE j.state = 'available' AND j.queue > w.queue
          ORDER BY j.queue LIMIT 1)
  FROM waiting AS w
  WHERE w.queue IS NOT NULL
), notified AS (
  SELECT queue, staged, conflicts FROM counts
  UNION ALL
  SELECT w.queue, 0, 0
  FROM waiting AS w
  WHERE w.queue IS NOT NULL
    AND ($1::text[] IS NULL OR w.queue = ANY($1::text[]))
    AND NOT EXISTS (SELECT 1 FROM counts AS c WHERE c.queue = w.queue)
)
SELECT queue, staged, conflicts,
       pg_notify($3::text, json_build_object('queue', queue)::text) IS NULL
FROM notified
