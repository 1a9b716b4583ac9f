-- :wids (JSON array of workflow ids). Releases the suspended jobs of these workflows whose
-- dependencies all completed (available, or scheduled when scheduled_at is still ahead), and
-- cancels those with a dependency cancelled, discarded or deleted that their workflow does not
-- ignore. Two statements in one transaction (writers take turns on SQLite: the check sees
-- every committed ack): the first computes the verdicts into a temporary table, the second
-- and third apply them. Rows are found through oban_jobs_workflow_index.
CREATE TEMP TABLE IF NOT EXISTS oban_workflow_verdicts (id INTEGER PRIMARY KEY, broken TEXT);

DELETE FROM temp.oban_workflow_verdicts;

INSERT INTO temp.oban_workflow_verdicts (id, broken)
WITH members AS (
  SELECT j.id, j.state, j.meta, (CASE WHEN instr(meta, '"workflow_id"') = 0 THEN NULL WHEN json_valid(meta) THEN json_extract(meta, '$.workflow_id') END) AS wid
  FROM {table_prefix}oban_jobs AS j
  WHERE (CASE WHEN instr(j.meta, '"workflow_id"') = 0 THEN NULL WHEN json_valid(j.meta) THEN json_extract(j.meta, '$.workflow_id') END) IN (SELECT value FROM json_each(:wids))
),
-- A dependency by name, over all its jobs (a workflow inserted twice has two; postgres'
-- twin says why).
steps AS (
  SELECT wid, json_extract(meta, '$.name') AS name,
         max(state NOT IN ('completed', 'cancelled', 'discarded')) AS unfinished,
         max(state = 'cancelled') AS cancelled,
         max(state = 'discarded') AS discarded
  FROM members
  WHERE json_type(meta, '$.name') = 'text'
  GROUP BY wid, json_extract(meta, '$.name')
),
waiting AS MATERIALIZED (
  SELECT id, wid,
         CASE WHEN json_type(meta, '$.deps') = 'array' THEN json_extract(meta, '$.deps') ELSE '[]' END AS deps,
         coalesce(json_extract(meta, '$.ignore_cancelled'), 0) = 1 AS ignore_cancelled,
         coalesce(json_extract(meta, '$.ignore_discarded'), 0) = 1 AS ignore_discarded,
         coalesce(json_extract(meta, '$.ignore_deleted'), 0) = 1 AS ignore_deleted
  FROM members
  WHERE state = 'suspended'
),
verdicts AS (
  SELECT w.id,
         sum(CASE WHEN d.value IS NOT NULL AND s.unfinished THEN 1 ELSE 0 END) AS pending,
         min(CASE WHEN d.value IS NOT NULL AND (
                    (s.name IS NULL AND NOT w.ignore_deleted)
                    OR (s.cancelled AND NOT w.ignore_cancelled)
                    OR (s.discarded AND NOT w.ignore_discarded))
                  THEN d.value || ' was ' || CASE
                    WHEN s.name IS NULL THEN 'deleted'
                    WHEN s.cancelled AND NOT w.ignore_cancelled THEN 'cancelled'
                    ELSE 'discarded' END END) AS broken
  FROM waiting AS w
  LEFT JOIN json_each(w.deps) AS d ON 1
  LEFT JOIN steps AS s ON s.wid = w.wid AND s.name = d.value
  GROUP BY w.id
)
SELECT id, broken FROM verdicts WHERE pending = 0 OR broken IS NOT NULL;

UPDATE {table_prefix}oban_jobs
SET state = CASE
      WHEN scheduled_at > strftime('%Y-%m-%d %H:%M:%f', 'now') THEN 'scheduled'
      ELSE 'available'
    END
WHERE id IN (SELECT id FROM temp.oban_workflow_verdicts WHERE broken IS NULL)
  AND state = 'suspended'
RETURNING id, state, queue, (CASE WHEN instr(meta, '"workflow_id"') = 0 THEN NULL WHEN json_valid(meta) THEN json_extract(meta, '$.workflow_id') END);

UPDATE {table_prefix}oban_jobs
SET state = 'cancelled',
    cancelled_at = strftime('%Y-%m-%d %H:%M:%f', 'now'),
    errors = json_insert(CASE
        WHEN NOT json_valid(errors) THEN '[]'
        WHEN json_type(errors) = 'array' THEN errors
        ELSE '[]'
      END, '$[#]', json_object(
        'attempt', attempt,
        'at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
        'error', 'cancelled: upstream job ' || (
          SELECT broken FROM temp.oban_workflow_verdicts AS v WHERE v.id = {table_prefix}oban_jobs.id)
      ))
WHERE id IN (SELECT id FROM temp.oban_workflow_verdicts WHERE broken IS NOT NULL)
  AND state = 'suspended'
RETURNING id, state, queue, (CASE WHEN instr(meta, '"workflow_id"') = 0 THEN NULL WHEN json_valid(meta) THEN json_extract(meta, '$.workflow_id') END);
