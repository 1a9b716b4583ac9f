-- $1 JSON array of jobs, each with meta.cron_name and meta.cron_at; $2 insert channel.
-- Skips an entry that already has a job for the same minute, so however many nodes evaluate
-- the crontab, each entry inserts at most one job per minute. Run after lock_cron.sql.
WITH input AS (
  SELECT *
  FROM ROWS FROM (
    jsonb_to_recordset($1::jsonb) AS (
      queue text, worker text, args jsonb, meta jsonb, tags text[],
      priority integer, max_attempts integer
    )
  ) WITH ORDINALITY AS j (queue, worker, args, meta, tags, priority, max_attempts, ord)
), inserted AS (
  INSERT INTO {prefix}.oban_jobs (state, queue, worker, args, meta, tags, priority, max_attempts)
  SELECT 'available', i.queue, i.worker, i.args, i.meta, i.tags, i.priority, i.max_attempts
  FROM input AS i
  WHERE NOT EXISTS (
    SELECT 1 FROM {prefix}.oban_jobs AS o
    WHERE o.meta @> jsonb_build_object(
      'cron_name', i.meta->'cron_name', 'cron_at', i.meta->'cron_at'
    )
  )
  ORDER BY i.ord
  -- A unique cron worker's job is skipped while a row holds its key (docs/unique.md).
  ON CONFLICT DO NOTHING
  RETURNING id, queue
), notified AS (
  SELECT pg_notify($2::text, json_build_object('queue', q.queue)::text)
  FROM (SELECT DISTINCT queue FROM inserted) AS q
)
SELECT i.id FROM inserted AS i, (SELECT count(*) FROM notified) AS n ORDER BY i.id
