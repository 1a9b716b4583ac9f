-- $1 workflow ids (text[]), $2 the insert channel. Releases the suspended jobs of these
-- workflows whose dependencies all completed (available, or scheduled when scheduled_at is
-- still ahead), and cancels those with a dependency cancelled, discarded or deleted that
-- their workflow does not ignore. Runs after the acks that finished those dependencies have
-- committed, as a statement of its own: it sees every finished dependency, and the
-- `state = 'suspended'` guards make a second run (another node's, the sweeper's) a no-op.
-- Each workflow's rows are found through the meta GIN index (@>). Returns the released and
-- the cancelled jobs: (id, state, queue, workflow id).
WITH wf AS (
  SELECT DISTINCT w.id FROM unnest($1::text[]) AS w(id)
),
members AS (
  SELECT j.id, j.state, j.meta, j.scheduled_at, wf.id AS wid
  FROM wf
  JOIN {prefix}.oban_jobs AS j ON j.meta @> jsonb_build_object('workflow_id', wf.id)
),
-- A dependency by name: one job per name, but a workflow inserted twice (a retry after an
-- ambiguous commit, a reused id) has one per insert: a dependency then waits while any of
-- them is unfinished, and breaks when any was cancelled or discarded (unless ignored).
steps AS (
  SELECT m.wid, m.meta->>'name' AS name,
         bool_or(m.state NOT IN ('completed', 'cancelled', 'discarded')) AS unfinished,
         bool_or(m.state = 'cancelled') AS cancelled,
         bool_or(m.state = 'discarded') AS discarded
  FROM members AS m
  WHERE jsonb_typeof(m.meta->'name') = 'string'
  GROUP BY m.wid, m.meta->>'name'
),
waiting AS MATERIALIZED (
  SELECT m.id, m.wid, m.scheduled_at,
         CASE WHEN jsonb_typeof(m.meta->'deps') = 'array' THEN m.meta->'deps' ELSE '[]' END AS deps,
         m.meta @> '{"ignore_cancelled": true}' AS ignore_cancelled,
         m.meta @> '{"ignore_discarded": true}' AS ignore_discarded,
         m.meta @> '{"ignore_deleted": true}' AS ignore_deleted
  FROM members AS m
  WHERE m.state = 'suspended'
),
verdicts AS (
  SELECT w.id, w.scheduled_at,
         count(*) FILTER (WHERE d.name IS NOT NULL AND s.unfinished) AS pending,
         min(d.name || ' was ' || CASE
               WHEN s.name IS NULL THEN 'deleted'
               WHEN s.cancelled AND NOT w.ignore_cancelled THEN 'cancelled'
               ELSE 'discarded'
             END) FILTER (
           WHERE d.name IS NOT NULL AND (
             (s.name IS NULL AND NOT w.ignore_deleted)
             OR (s.cancelled AND NOT w.ignore_cancelled)
             OR (s.discarded AND NOT w.ignore_discarded))
         ) AS broken
  FROM waiting AS w
  LEFT JOIN LATERAL jsonb_array_elements_text(w.deps) AS d(name) ON true
  LEFT JOIN steps AS s ON s.wid = w.wid AND s.name = d.name
  GROUP BY w.id, w.scheduled_at
),
released AS (
  UPDATE {prefix}.oban_jobs AS j
  SET state = CASE
        WHEN j.scheduled_at > timezone('UTC', now()) THEN 'scheduled'
        ELSE 'available'
      END::{prefix}.oban_job_state
  FROM verdicts AS v
  WHERE j.id = v.id AND v.pending = 0 AND v.broken IS NULL AND j.state = 'suspended'
  RETURNING j.id, j.state::text AS state, j.queue, j.meta->>'workflow_id' AS wid
),
cancelled AS (
  UPDATE {prefix}.oban_jobs AS j
  SET state = 'cancelled',
      cancelled_at = timezone('UTC', now()),
      errors = j.errors || jsonb_build_object(
        'attempt', j.attempt,
        'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'error', 'cancelled: upstream job ' || v.broken
      )
  FROM verdicts AS v
  WHERE j.id = v.id AND v.broken IS NOT NULL AND j.state = 'suspended'
  RETURNING j.id, j.state::text AS state, j.queue, j.meta->>'workflow_id' AS wid
),
changed AS (
  SELECT * FROM released UNION ALL SELECT * FROM cancelled
),
notified AS (
  SELECT pg_notify($2::text, json_build_object('queue', q.queue)::text)
  FROM (SELECT DISTINCT queue FROM released WHERE state = 'available') AS q
)
SELECT c.id, c.state, c.queue, c.wid
FROM changed AS c, (SELECT count(*) FROM notified) AS n
