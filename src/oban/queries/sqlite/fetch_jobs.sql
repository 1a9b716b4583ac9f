-- :queue, :demand, :node, :uuid (the producer). Claims up to :demand available jobs and marks
-- them executing in one statement. A write statement holds SQLite's database-wide write lock
-- from its first row to its last, so two connections (or processes) never claim one row.
-- Text columns are read as BLOBs (the engine decodes them): a value that is not UTF-8 then
-- fails only its own row, where the driver would fail the whole statement.
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
RETURNING id, CAST(worker AS BLOB), CAST(queue AS BLOB), attempt, max_attempts, priority,
  CAST(args AS BLOB), CAST(meta AS BLOB), CAST(errors AS BLOB), CAST(tags AS BLOB),
  CAST(attempted_by AS BLOB), CAST(inserted_at AS BLOB), CAST(attempted_at AS BLOB),
  CAST(scheduled_at AS BLOB), CAST(state AS BLOB), CAST(cancelled_at AS BLOB),
  CAST(completed_at AS BLOB), CAST(discarded_at AS BLOB)
