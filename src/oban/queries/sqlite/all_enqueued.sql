-- Jobs waiting to run (available, scheduled, suspended), newest first.
-- Text columns are read as BLOBs (the engine decodes them): a value that is not UTF-8 then
-- fails only its own row, where the driver would fail the whole statement.
SELECT id, CAST(worker AS BLOB), CAST(queue AS BLOB), attempt, max_attempts, priority,
  CAST(args AS BLOB), CAST(meta AS BLOB), CAST(errors AS BLOB), CAST(tags AS BLOB),
  CAST(attempted_by AS BLOB), CAST(inserted_at AS BLOB), CAST(attempted_at AS BLOB),
  CAST(scheduled_at AS BLOB), CAST(state AS BLOB), CAST(cancelled_at AS BLOB),
  CAST(completed_at AS BLOB), CAST(discarded_at AS BLOB)
FROM {table_prefix}oban_jobs
WHERE state IN ('available', 'scheduled', 'suspended')
ORDER BY id DESC
