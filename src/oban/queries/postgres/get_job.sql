-- $1 one id: get_jobs.sql for a single job. A statement of its own because PostgreSQL plans
-- `id = ANY($1)` afresh at every execution (its generic plan, for an array of unknown length,
-- never looks cheaper than a custom one), while `id = $1` keeps its generic plan: a waiter's
-- read of one row, after each relay, skips the planning.
SELECT id, worker, queue, attempt, max_attempts, priority,
  args::text, meta::text, to_jsonb(errors)::text, tags, attempted_by,
  inserted_at, attempted_at, scheduled_at, state::text,
  cancelled_at, completed_at, discarded_at
FROM {prefix}.oban_jobs
WHERE id = $1::bigint
