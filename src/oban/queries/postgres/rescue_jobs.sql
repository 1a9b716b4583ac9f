-- $1 rescue_after seconds, $2 producer max_age seconds, $3 limit.
-- An executing job is an orphan when the producer that claimed it (attempted_by[2]) has a
-- stale heartbeat, or when no producer row knows it and it started over rescue_after ago.
-- A job whose producer still heartbeats is never rescued, however long it runs. Elixir nodes
-- write no producer rows, so their jobs, running or not, only ever meet the rescue_after
-- rule (an hour by default, as in Elixir's Lifeline).
-- Orphans with attempts left go back to available (meta.rescued counts the rescues); the
-- others are discarded, meta untouched. Available jobs that already used every attempt are
-- discarded too (the fetch skips them).
-- A stale heartbeat proves its node dead only if the database was up all along: within a
-- max_age of the server's start, every heartbeat counts as fresh, except that of a producer
-- that expired itself at shutdown ('-infinity'), whose jobs were handed back.
-- No row's own values can fail the statement (and with it every rescue): a meta that is not
-- a JSON object starts again as {}, and meta.rescued counts only as a whole number from 0 to
-- 2^53 - 1 (anything else counts as 0, so the rescue makes it 1).
WITH live AS (
  SELECT uuid::text AS uuid,
         updated_at <> '-infinity' AND (
           updated_at >= timezone('UTC', now()) - make_interval(secs => $2::double precision)
           OR pg_postmaster_start_time() > now() - make_interval(secs => $2::double precision)
         ) AS fresh
  FROM {prefix}.oban_producers
), orphans AS MATERIALIZED (
  SELECT j.id
  FROM {prefix}.oban_jobs AS j
  LEFT JOIN live AS p ON p.uuid = j.attempted_by[2]
  WHERE (
      j.state = 'executing'
      AND (
        p.fresh IS FALSE
        OR (p.uuid IS NULL
            AND j.attempted_at < timezone('UTC', now()) - make_interval(secs => $1::double precision))
      )
    )
    OR (j.state = 'available' AND j.attempt >= j.max_attempts)
  ORDER BY j.id
  LIMIT $3::integer
  FOR UPDATE OF j SKIP LOCKED
)
UPDATE {prefix}.oban_jobs AS j
SET state = CASE WHEN j.attempt >= j.max_attempts THEN 'discarded' ELSE 'available' END::{prefix}.oban_job_state,
    discarded_at = CASE WHEN j.attempt >= j.max_attempts THEN timezone('UTC', now()) ELSE j.discarded_at END,
    meta = CASE
      WHEN j.state = 'executing' AND j.attempt < j.max_attempts
        THEN CASE WHEN jsonb_typeof(j.meta) = 'object' THEN j.meta ELSE '{}' END
          || jsonb_build_object('rescued', CASE
            WHEN jsonb_typeof(j.meta->'rescued') IS DISTINCT FROM 'number' THEN 0
            WHEN (j.meta->>'rescued')::numeric BETWEEN 0 AND 9007199254740991
                 AND (j.meta->>'rescued')::numeric % 1 = 0
              THEN (j.meta->>'rescued')::numeric::bigint
            ELSE 0
          END + 1)
      ELSE j.meta
    END
FROM orphans
WHERE j.id = orphans.id
RETURNING j.id, j.state::text
