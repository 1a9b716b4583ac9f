-- :jobs, a JSON array of {id, state, args, max_attempts, meta, priority, queue, scheduled_at,
-- tags, worker} (already validated; state is what the caller read). Running jobs, and jobs
-- whose state changed since the read (so their meta may hold a newer result), are not
-- updated. A waiting job follows its new scheduled_at: available when due, scheduled in the
-- future.
-- Text columns are read as BLOBs (the engine decodes them): a value that is not UTF-8 then
-- fails only its own row, where the driver would fail the whole statement.
UPDATE {table_prefix}oban_jobs AS j
SET args = u.args,
    max_attempts = u.max_attempts,
    meta = u.meta,
    priority = u.priority,
    queue = u.queue,
    scheduled_at = u.scheduled_at,
    tags = u.tags,
    worker = u.worker,
    state = CASE
      WHEN j.state IN ('available', 'scheduled')
           AND u.scheduled_at > strftime('%Y-%m-%d %H:%M:%f', 'now')
        THEN 'scheduled'
      WHEN j.state IN ('available', 'scheduled')
        THEN 'available'
      ELSE j.state
    END
FROM (
  SELECT
    e.value ->> '$.id' AS id,
    e.value ->> '$.state' AS state,
    e.value ->> '$.args' AS args,
    e.value ->> '$.max_attempts' AS max_attempts,
    e.value ->> '$.meta' AS meta,
    e.value ->> '$.priority' AS priority,
    e.value ->> '$.queue' AS queue,
    e.value ->> '$.scheduled_at' AS scheduled_at,
    e.value ->> '$.tags' AS tags,
    e.value ->> '$.worker' AS worker
  FROM json_each(:jobs) AS e
) AS u
WHERE j.id = u.id AND j.state <> 'executing' AND j.state = u.state
RETURNING id, CAST(worker AS BLOB), CAST(queue AS BLOB), attempt, max_attempts, priority,
  CAST(args AS BLOB), CAST(meta AS BLOB), CAST(errors AS BLOB), CAST(tags AS BLOB),
  CAST(attempted_by AS BLOB), CAST(inserted_at AS BLOB), CAST(attempted_at AS BLOB),
  CAST(scheduled_at AS BLOB), CAST(state AS BLOB), CAST(cancelled_at AS BLOB),
  CAST(completed_at AS BLOB), CAST(discarded_at AS BLOB)
