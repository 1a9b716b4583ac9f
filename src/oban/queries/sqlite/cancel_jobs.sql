-- :ids (JSON array). Cancels incomplete jobs that are not running; returns those plus the ids
-- of executing ones (which are signalled instead, and keep their state until they return).
-- One statement: executing targets are matched too but every column keeps its value, so they
-- are only reported (second column 1).
UPDATE {table_prefix}oban_jobs
SET state = CASE WHEN state = 'executing' THEN state ELSE 'cancelled' END,
    cancelled_at = CASE
      WHEN state = 'executing' THEN cancelled_at ELSE strftime('%Y-%m-%d %H:%M:%f', 'now')
    END,
    meta = CASE
      WHEN state = 'executing' THEN meta
      ELSE json_set(meta, '$.cancel_attempted_at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    END
WHERE id IN (SELECT value FROM json_each(:ids))
  AND state IN ('available', 'scheduled', 'retryable', 'suspended', 'executing')
RETURNING id, state = 'executing'
