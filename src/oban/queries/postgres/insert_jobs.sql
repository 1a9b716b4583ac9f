-- $1: a JSON array of jobs; $2: the insert channel. One statement for any number of jobs,
-- one NOTIFY per queue that received available jobs.
WITH inserted AS (
  INSERT INTO {prefix}.oban_jobs
    (state, queue, worker, args, meta, tags, priority, max_attempts, scheduled_at)
  SELECT
    CASE
      WHEN j.state <> 'available' THEN j.state
      WHEN j.scheduled_at > timezone('UTC', now()) THEN 'scheduled'
      ELSE 'available'
    END::{prefix}.oban_job_state,
    j.queue, j.worker, j.args, j.meta, j.tags, j.priority, j.max_attempts,
    COALESCE(j.scheduled_at, timezone('UTC', now()))
  FROM ROWS FROM (
    jsonb_to_recordset($1::jsonb) AS (
      state text, queue text, worker text, args jsonb, meta jsonb, tags text[],
      priority integer, max_attempts integer, scheduled_at timestamp
    )
  ) WITH ORDINALITY AS j (
    state, queue, worker, args, meta, tags, priority, max_attempts, scheduled_at, ord
  )
  ORDER BY j.ord
  RETURNING id, state, queue, inserted_at, scheduled_at
), notified AS (
  SELECT pg_notify($2::text, json_build_object('queue', q.queue)::text)
  FROM (SELECT DISTINCT queue FROM inserted WHERE state = 'available') AS q
)
SELECT i.id, i.state::text, i.inserted_at, i.scheduled_at
FROM inserted AS i, (SELECT count(*) FROM notified) AS n
ORDER BY i.id
