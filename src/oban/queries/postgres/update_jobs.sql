-- $1 JSON array of {id, state, args, max_attempts, meta, priority, queue, scheduled_at, tags,
-- worker} (already validated; state is what the caller read). Running jobs, and jobs whose
-- state changed since the read (so their meta may hold a newer result), are not updated.
-- A waiting job follows its new scheduled_at: available when due, scheduled in the future.
UPDATE {prefix}.oban_jobs AS j
SET args = u.args,
    max_attempts = u.max_attempts,
    meta = u.meta,
    priority = u.priority,
    queue = u.queue,
    scheduled_at = u.scheduled_at,
    tags = u.tags,
    worker = u.worker,
    state = CASE
      WHEN j.state IN ('available', 'scheduled') AND u.scheduled_at > timezone('UTC', now())
        THEN 'scheduled'
      WHEN j.state IN ('available', 'scheduled')
        THEN 'available'
      ELSE j.state
    END::{prefix}.oban_job_state
FROM jsonb_to_recordset($1::jsonb) AS u (
  id bigint, state text, args jsonb, max_attempts integer, meta jsonb, priority integer, queue text,
  scheduled_at timestamp, tags text[], worker text
)
WHERE j.id = u.id AND j.state <> 'executing' AND j.state::text = u.state
RETURNING j.id, j.worker, j.queue, j.attempt, j.max_attempts, j.priority,
  j.args::text, j.meta::text, to_jsonb(j.errors)::text, j.tags, j.attempted_by,
  j.inserted_at, j.attempted_at, j.scheduled_at, j.state::text,
  j.cancelled_at, j.completed_at, j.discarded_at
