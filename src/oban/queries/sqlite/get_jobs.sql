-- :ids (JSON array)
SELECT id, worker, queue, attempt, max_attempts, priority,
  args, meta, errors, tags, attempted_by,
  inserted_at, attempted_at, scheduled_at, state,
  cancelled_at, completed_at, discarded_at
FROM {table_prefix}oban_jobs
WHERE id IN (SELECT value FROM json_each(:ids))
ORDER BY id
