-- errors is jsonb[] in Elixir's schema and a jsonb array in one left by oban-py 0.7.0: `||`
-- appends the new entry to either.
-- The UPDATE that writes acks, used inside ack statements as their CTE acked (see
-- PostgresEngine: the relayed CTE of ack_relayed.sql follows it).
-- $1: a JSON array of acks. Each update is guarded by the state and attempted_at the job was
-- fetched with, so a stale ack (the job was rescued meanwhile) changes nothing.
-- A row's own values cannot fail the statement (and with it every other ack): a meta that is
-- not a JSON object starts again as {}, and meta.snoozed counts only as a whole number from 0
-- to 2^53 - 1 (anything else counts as 0, so the snooze makes it 1).
UPDATE {prefix}.oban_jobs AS j
SET state = a.state::{prefix}.oban_job_state,
    attempt = j.attempt + a.attempt_change,
    completed_at = CASE WHEN a.state = 'completed' THEN timezone('UTC', now()) ELSE j.completed_at END,
    cancelled_at = CASE WHEN a.state = 'cancelled' THEN timezone('UTC', now()) ELSE j.cancelled_at END,
    discarded_at = CASE WHEN a.state = 'discarded' THEN timezone('UTC', now()) ELSE j.discarded_at END,
    scheduled_at = CASE
      WHEN a.schedule_in IS NULL THEN j.scheduled_at
      ELSE timezone('UTC', now()) + make_interval(secs => a.schedule_in)
    END,
    errors = CASE
      WHEN a.error IS NULL THEN j.errors
      ELSE j.errors || jsonb_build_object(
        'attempt', j.attempt,
        'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'error', a.error
      )
    END,
    meta = CASE
      WHEN a.meta IS NULL AND NOT a.snooze THEN j.meta
      ELSE CASE WHEN jsonb_typeof(j.meta) = 'object' THEN j.meta ELSE '{}' END
        || COALESCE(a.meta, '{}') || CASE
        WHEN a.snooze THEN jsonb_build_object('snoozed', CASE
          WHEN jsonb_typeof(j.meta->'snoozed') IS DISTINCT FROM 'number' THEN 0
          WHEN (j.meta->>'snoozed')::numeric BETWEEN 0 AND 9007199254740991
               AND (j.meta->>'snoozed')::numeric % 1 = 0
            THEN (j.meta->>'snoozed')::numeric::bigint
          ELSE 0
        END + 1)
        ELSE '{}'
      END
    END
FROM jsonb_to_recordset($1::jsonb) AS a (
  id bigint, attempted_at timestamp, state text, attempt_change integer,
  schedule_in double precision, error text, meta jsonb, snooze boolean, wanted boolean
)
-- (state is compared as the enum, so an index on state can serve it: comparing it as text
-- made PostgreSQL scan the whole table on a table without statistics yet.)
WHERE j.id = a.id AND j.state = 'executing' AND j.attempted_at = a.attempted_at
-- The id, then for a job a waiter of the node waits for (a.wanted) its row as written, in
-- get_jobs.sql's columns (NULLs for any other job: they send nothing more), then whether the
-- row says relay (what the relay notification announces). The node's waiters take these rows
-- instead of reading them again.
RETURNING j.id,
  CASE WHEN a.wanted THEN j.worker END,
  CASE WHEN a.wanted THEN j.queue END,
  CASE WHEN a.wanted THEN j.attempt END,
  CASE WHEN a.wanted THEN j.max_attempts END,
  CASE WHEN a.wanted THEN j.priority END,
  CASE WHEN a.wanted THEN j.args::text END,
  CASE WHEN a.wanted THEN j.meta::text END,
  CASE WHEN a.wanted THEN to_jsonb(j.errors)::text END,
  CASE WHEN a.wanted THEN j.tags END,
  CASE WHEN a.wanted THEN j.attempted_by END,
  CASE WHEN a.wanted THEN j.inserted_at END,
  CASE WHEN a.wanted THEN j.attempted_at END,
  CASE WHEN a.wanted THEN j.scheduled_at END,
  CASE WHEN a.wanted THEN j.state::text END,
  CASE WHEN a.wanted THEN j.cancelled_at END,
  CASE WHEN a.wanted THEN j.completed_at END,
  CASE WHEN a.wanted THEN j.discarded_at END,
  j.meta @> '{"relay": true}' AS relay
