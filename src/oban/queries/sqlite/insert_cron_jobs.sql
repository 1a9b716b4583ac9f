-- :jobs, a JSON array of jobs, each with meta.cron_name and meta.cron_at. Skips an entry that
-- already has a job for the same minute, so however many processes evaluate the crontab,
-- each entry inserts at most one job per minute: one statement holds SQLite's write lock from
-- the check to the insert, so no advisory lock (PostgreSQL's lock_cron.sql) is needed.
INSERT INTO {table_prefix}oban_jobs
  (state, queue, worker, args, meta, tags, priority, max_attempts, inserted_at, scheduled_at)
SELECT
  'available',
  i.value ->> '$.queue',
  i.value ->> '$.worker',
  i.value ->> '$.args',
  i.value ->> '$.meta',
  i.value ->> '$.tags',
  i.value ->> '$.priority',
  i.value ->> '$.max_attempts',
  strftime('%Y-%m-%d %H:%M:%f', 'now'),
  strftime('%Y-%m-%d %H:%M:%f', 'now')
FROM json_each(:jobs) AS i
WHERE NOT EXISTS (
  SELECT 1 FROM {table_prefix}oban_jobs AS o
  WHERE json_extract(o.meta, '$.cron_name') = json_extract(i.value, '$.meta.cron_name')
    AND json_extract(o.meta, '$.cron_at') = json_extract(i.value, '$.meta.cron_at')
)
ORDER BY i.key
-- A unique cron worker's job is skipped while a row holds its key (docs/unique.md).
ON CONFLICT DO NOTHING
RETURNING id, queue
