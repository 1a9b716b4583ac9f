-- :jobs, a JSON array of jobs, some unique (meta.uniq_key, meta.uniq_bmp); :base, the highest
-- id used so far (unique_base.sql, read in the same transaction). Job number n of the array
-- gets the id :base + n + 1, so the rows that come back tell which jobs were inserted; a job
-- whose key a row holds is skipped (oban_jobs_unique_index). Rows go in by rank, the job's
-- place in key order. States and times as in insert_jobs.sql.
INSERT INTO {table_prefix}oban_jobs
  (id, state, queue, worker, args, meta, tags, priority, max_attempts, inserted_at, scheduled_at)
SELECT
  :base + j.key + 1,
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
WHERE true
ORDER BY j.value ->> '$.rank'
ON CONFLICT DO NOTHING
RETURNING id, state, queue, inserted_at, scheduled_at
