-- :queue, :demand, :node, :uuid (the producer). Claims up to :demand available jobs and marks
-- them executing in one statement. A write statement holds SQLite's database-wide write lock
-- from its first row to its last, so two connections (or processes) never claim one row.
UPDATE {table_prefix}oban_jobs
SET state = 'executing',
    attempt = attempt + 1,
    attempted_at = strftime('%Y-%m-%d %H:%M:%f', 'now'),
    attempted_by = json_array(:node, :uuid)
WHERE id IN (
  SELECT id
  FROM {table_prefix}oban_jobs
  WHERE state = 'available' AND queue = :queue AND attempt < max_attempts
  ORDER BY priority, scheduled_at, id
  LIMIT :demand
)
RETURNING id, worker, queue, attempt, max_attempts, priority,
  args, meta, errors, tags, attempted_by,
  inserted_at, attempted_at, scheduled_at, state,
  cancelled_at, completed_at, discarded_at
