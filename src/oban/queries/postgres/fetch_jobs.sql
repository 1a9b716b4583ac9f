-- $1 queue, $2 demand, $3 node, $4 producer uuid, $5 a JSON array of acks (may be empty),
-- $6 the relay channel (relayed: ack_relayed.sql).
-- One statement writes the acks of jobs that finished (the ack_jobs statement, its $1 as
-- $5) and claims up to $2 available jobs, marking them executing; SKIP LOCKED keeps
-- concurrent producers apart. The two never touch the same row: acks are guarded by
-- state = 'executing', claims take only available jobs.
-- Rows: (false, job columns..., false) per claimed job, then (true, id, job columns or NULLs,
-- relay) per written ack (ack_jobs.sql's RETURNING).
WITH acked AS (
{acks}
), relayed AS (
{relayed}
), locked AS MATERIALIZED (
  SELECT id
  FROM {prefix}.oban_jobs
  WHERE state = 'available' AND queue = $1::text AND attempt < max_attempts
  ORDER BY priority, scheduled_at, id
  LIMIT $2::integer
  FOR UPDATE SKIP LOCKED
), claimed AS (
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
)
SELECT false, c.*, false FROM claimed AS c
UNION ALL
SELECT true, a.* FROM acked AS a CROSS JOIN (SELECT count(*) FROM relayed) AS n
