-- :ids (JSON array). Makes finished or waiting jobs available now; running and already
-- available jobs are left alone. Exhausted jobs get one more attempt. Returns the queues so
-- the engine can wake their in-process producers (as BLOBs: a queue name that is not UTF-8
-- fails nothing). A meta that is not JSON starts again as {}.
UPDATE {table_prefix}oban_jobs
SET state = 'available',
    scheduled_at = strftime('%Y-%m-%d %H:%M:%f', 'now'),
    max_attempts = max(max_attempts, attempt + 1),
    completed_at = NULL,
    cancelled_at = NULL,
    discarded_at = NULL,
    meta = json_set(CASE WHEN json_valid(meta) THEN meta ELSE '{}' END, '$.uniq_bmp', json('[]'))
WHERE id IN (SELECT value FROM json_each(:ids))
  AND state NOT IN ('available', 'executing')
RETURNING id, CAST(queue AS BLOB)
