-- $1 max_age seconds, $2 limit. Deletes finished jobs older than max_age, each state through
-- its own partial index, oldest first; but not a job of a workflow that still has unfinished
-- jobs (its dependents read its result and its state: docs/workflows.md).
WITH doomed AS (
  SELECT id FROM (
    (SELECT id FROM {prefix}.oban_jobs
     WHERE state = 'completed'
       AND completed_at < timezone('UTC', now()) - make_interval(secs => $1::double precision)
       AND NOT (meta ? 'workflow_id' AND EXISTS (
         SELECT 1 FROM {prefix}.oban_jobs AS w
         WHERE w.meta @> jsonb_build_object('workflow_id', oban_jobs.meta->'workflow_id')
           AND w.state NOT IN ('completed', 'cancelled', 'discarded')))
     ORDER BY completed_at LIMIT $2::integer)
    UNION ALL
    (SELECT id FROM {prefix}.oban_jobs
     WHERE state = 'cancelled'
       AND cancelled_at < timezone('UTC', now()) - make_interval(secs => $1::double precision)
       AND NOT (meta ? 'workflow_id' AND EXISTS (
         SELECT 1 FROM {prefix}.oban_jobs AS w
         WHERE w.meta @> jsonb_build_object('workflow_id', oban_jobs.meta->'workflow_id')
           AND w.state NOT IN ('completed', 'cancelled', 'discarded')))
     ORDER BY cancelled_at LIMIT $2::integer)
    UNION ALL
    (SELECT id FROM {prefix}.oban_jobs
     WHERE state = 'discarded'
       AND discarded_at < timezone('UTC', now()) - make_interval(secs => $1::double precision)
       AND NOT (meta ? 'workflow_id' AND EXISTS (
         SELECT 1 FROM {prefix}.oban_jobs AS w
         WHERE w.meta @> jsonb_build_object('workflow_id', oban_jobs.meta->'workflow_id')
           AND w.state NOT IN ('completed', 'cancelled', 'discarded')))
     ORDER BY discarded_at LIMIT $2::integer)
  ) AS candidates
  ORDER BY id
  LIMIT $2::integer
)
DELETE FROM {prefix}.oban_jobs AS j
USING doomed
WHERE j.id = doomed.id
  AND j.state IN ('completed', 'cancelled', 'discarded')
RETURNING j.id
