-- $1 queues, $2 limit, $3 insert channel. Makes due scheduled/retryable jobs available and
-- returns how many jobs each queue received, notifying other nodes once per queue.
WITH due AS MATERIALIZED (
  SELECT id
  FROM {prefix}.oban_jobs
  WHERE state IN ('scheduled', 'retryable')
    AND scheduled_at <= timezone('UTC', now())
    AND queue = ANY($1::text[])
  ORDER BY scheduled_at, id
  LIMIT $2::integer
  FOR UPDATE SKIP LOCKED
), staged AS (
  UPDATE {prefix}.oban_jobs AS j
  SET state = 'available'
  FROM due
  WHERE j.id = due.id
  RETURNING j.queue
), queues AS (
  SELECT queue, count(*) AS staged FROM staged GROUP BY queue
)
SELECT q.queue, q.staged, pg_notify($3::text, json_build_object('queue', q.queue)::text) IS NULL
FROM queues AS q
