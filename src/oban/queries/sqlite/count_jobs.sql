-- oban.count_jobs: how many jobs each (state, queue) pair holds (:states, :queues: JSON
-- arrays or NULL), exact: the state/queue index covers the count. Names are read as BLOBs (a
-- name that is not UTF-8 fails nothing).
SELECT CAST(state AS BLOB), CAST(queue AS BLOB), count(*)
FROM {table_prefix}oban_jobs
WHERE (:states IS NULL OR state IN (SELECT value FROM json_each(:states)))
  AND (:queues IS NULL OR queue IN (SELECT value FROM json_each(:queues)))
GROUP BY state, queue
