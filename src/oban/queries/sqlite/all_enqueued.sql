-- Jobs waiting to run (available, scheduled, suspended), newest first.
SELECT id, worker, queue, attempt, max_attempts, priority,
  args, meta, errors, tags, attempted_by,
  inserted_at, attempted_at, scheduled_at, state,
  cancelled_at, completed_at, discarded_at
FROM {table_prefix}oban_jobs
WHERE state IN ('available', 'scheduled', 'suspended')
ORDER BY id DESC
