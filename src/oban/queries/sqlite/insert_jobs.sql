-- :jobs, a JSON array of jobs. One statement for any number of jobs (a single statement holds
-- SQLite's write lock throughout, so it is atomic). A job asking for 'available' becomes
-- 'scheduled' when its scheduled_at is in the future; no scheduled_at means now. Rows are
-- inserted in input order, so ascending ids follow the input. The engine wakes in-process
-- producers of the queues that received available jobs (SQLite has no NOTIFY).
INSERT INTO {table_prefix}oban_jobs
  (state, queue, worker, args, meta, tags, priority, max_attempts, inserted_at, scheduled_at)
SELECT
  CASE
    WHEN j.value ->> '$.state' <> 'available' THEN j.value ->> '$.state'
    WHEN j.value ->> '$.scheduled_at' > n.now THEN 'scheduled'
    ELSE 'available'
  END,
  j.value ->> '$.queue',
  j.value ->> '$.worker',
  j.value ->> '$.args',
  j.value ->> '$.meta',
  j.value ->> '$.tags',
  j.value ->> '$.priority',
  j.value ->> '$.max_attempts',
  n.now,
  COALESCE(j.value ->> '$.scheduled_at', n.now)
FROM json_each(:jobs) AS j, (SELECT strftime('%Y-%m-%d %H:%M:%f', 'now') AS now) AS n
ORDER BY j.key
RETURNING id, state, queue, inserted_at, scheduled_at
