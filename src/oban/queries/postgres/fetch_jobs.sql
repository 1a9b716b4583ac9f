-- $1 queue, $2 demand, $3 node, $4 producer uuid. Claims up to $2 available jobs and marks
-- them executing in one statement; SKIP LOCKED keeps concurrent producers apart.
WITH locked AS MATERIALIZED (
  SELECT id
  FROM {prefix}.oban_jobs
  WHERE state = 'available' AND queue = $1::text AND attempt < max_attempts
  ORDER BY priority, scheduled_at, id
  LIMIT $2::integer
  FOR UPDATE SKIP LOCKED
)
UPDATE {prefix}.oban_jobs AS j
SET state = 'executing',
    attempt = j.attempt + 1,
    attempted_at = timezone('UTC', now()),
    attempted_by = ARRAY[$3::text, $4::text]
FROM locked
WHERE j.id = locked.id
RETURNING j.id, j.worker, j.queue, j.attempt, j.max_attempts, j.priority,
  j.args::text, j.meta::text, to_jsonb(j.errors)::text, j.tags, j.attempted_by,
  j.inserted_at, j.attempted_at, j.scheduled_at, j.state::text,
  j.cancelled_at, j.completed_at, j.discarded_at
