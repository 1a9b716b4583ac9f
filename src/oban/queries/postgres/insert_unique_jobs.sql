-- $1: a JSON array of jobs, some unique (meta.uniq_key, meta.uniq_bmp); $2: the insert channel.
-- One row back per input job, in input order: its ordinal, then the inserted row's id, state, queue,
-- inserted_at and scheduled_at, or NULLs when the insert was skipped because a row holds the
-- job's key (oban_jobs_unique_index, or any other unique index: the conflict has no target).
-- Each job's id is drawn first, so a skipped row is told apart from an inserted one without
-- guessing; ids follow the input order. Rows go in by rank, the job's place in key order (the
-- engine ranks them), so two batches that share keys take them in the same order and cannot
-- deadlock.
WITH input AS MATERIALIZED (
  SELECT j.*, nextval((SELECT pg_get_serial_sequence('{prefix}.oban_jobs', 'id')::regclass)) AS id
  FROM ROWS FROM (
    jsonb_to_recordset($1::jsonb) AS (
      state text, queue text, worker text, args jsonb, meta jsonb, tags text[],
      priority integer, max_attempts integer, scheduled_at timestamp, rank integer
    )
  ) WITH ORDINALITY AS j (
    state, queue, worker, args, meta, tags, priority, max_attempts, scheduled_at, rank, ord
  )
  ORDER BY j.ord
), inserted AS (
  INSERT INTO {prefix}.oban_jobs
    (id, state, queue, worker, args, meta, tags, priority, max_attempts, scheduled_at)
  SELECT
    i.id,
    CASE
      WHEN i.state <> 'available' THEN i.state
      WHEN i.scheduled_at > timezone('UTC', now()) THEN 'scheduled'
      ELSE 'available'
    END::{prefix}.oban_job_state,
    i.queue, i.worker, i.args, i.meta, i.tags, i.priority, i.max_attempts,
    COALESCE(i.scheduled_at, timezone('UTC', now()))
  FROM input AS i
  ORDER BY i.rank
  ON CONFLICT DO NOTHING
  RETURNING id, state, queue, inserted_at, scheduled_at
), notified AS (
  SELECT pg_notify($2::text, json_build_object('queue', q.queue)::text)
  FROM (SELECT DISTINCT queue FROM inserted WHERE state = 'available') AS q
)
SELECT i.ord, n.id, n.state::text, n.queue, n.inserted_at, n.scheduled_at
FROM input AS i
LEFT JOIN inserted AS n ON n.id = i.id
CROSS JOIN (SELECT count(*) FROM notified) AS x
ORDER BY i.ord
