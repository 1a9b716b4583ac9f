-- :queues (JSON array of names; NULL: every queue), :limit. Makes due scheduled/retryable jobs available, oldest
-- first, in one statement; returns the queue of every staged job (the engine counts them per
-- queue and wakes that queue's in-process producers).
UPDATE {table_prefix}oban_jobs
SET state = 'available'
WHERE id IN (
  SELECT id
  FROM {table_prefix}oban_jobs
  WHERE state IN ('scheduled', 'retryable')
    AND scheduled_at <= strftime('%Y-%m-%d %H:%M:%f', 'now')
    AND (:queues IS NULL OR queue IN (SELECT value FROM json_each(:queues)))
  ORDER BY scheduled_at, id
  LIMIT :limit
)
RETURNING queue
