-- $1 queues (NULL: every queue), $2 limit, $3 insert channel. The leader's staging: makes
-- due scheduled/retryable jobs available, oldest first.
-- Each row is locked before it moves (SKIP LOCKED: a row another transaction holds waits
-- for the next run) and its state is checked again under the lock, so neither a claim nor
-- a concurrent stager (Elixir's locks nothing) can have a running or finished job made
-- available again by this statement.
-- Then, as Elixir's stager does, every queue with available jobs (staged now or waiting) is
-- notified once, so the producers of every node, Python or Elixir, wake. Returns
-- (queue, jobs staged for it) for each notified queue.
WITH RECURSIVE due AS MATERIALIZED (
  SELECT id
  FROM {prefix}.oban_jobs
  WHERE state IN ('scheduled', 'retryable')
    AND scheduled_at <= timezone('UTC', now())
    AND ($1::text[] IS NULL OR queue = ANY($1::text[]))
  ORDER BY scheduled_at, id
  LIMIT $2::integer
  FOR UPDATE SKIP LOCKED
), staged AS (
  UPDATE {prefix}.oban_jobs AS j
  SET state = 'available'
  FROM due
  WHERE j.id = due.id AND j.state IN ('scheduled', 'retryable')
  RETURNING j.queue
), counts AS (
  SELECT queue, count(*) AS staged FROM staged GROUP BY queue
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
  SELECT queue, staged FROM counts
  UNION ALL
  SELECT w.queue, 0
  FROM waiting AS w
  WHERE w.queue IS NOT NULL
    AND ($1::text[] IS NULL OR w.queue = ANY($1::text[]))
    AND NOT EXISTS (SELECT 1 FROM counts AS c WHERE c.queue = w.queue)
)
SELECT queue, staged, pg_notify($3::text, json_build_object('queue', queue)::text) IS NULL
FROM notified
