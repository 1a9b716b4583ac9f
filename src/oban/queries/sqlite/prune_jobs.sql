-- :max_age seconds, :limit. Deletes finished jobs older than max_age, each state through its
-- own partial index (INDEXED BY: with statistics SQLite may otherwise walk the state index
-- over every finished row), oldest first; but not a job of a workflow that still has unfinished
-- jobs (docs/workflows.md), found through oban_jobs_workflow_index.
DELETE FROM {table_prefix}oban_jobs
WHERE id IN (
  SELECT id FROM (
    SELECT id FROM (
      SELECT id FROM {table_prefix}oban_jobs INDEXED BY {table_prefix}oban_jobs_completed_at_index
      WHERE state = 'completed'
        AND completed_at < strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', -:max_age))
        AND NOT ((CASE WHEN instr(meta, '"workflow_id"') = 0 THEN NULL WHEN json_valid(meta) THEN json_extract(meta, '$.workflow_id') END) IS NOT NULL AND EXISTS (
          SELECT 1 FROM {table_prefix}oban_jobs AS o
          WHERE (CASE WHEN instr(o.meta, '"workflow_id"') = 0 THEN NULL WHEN json_valid(o.meta) THEN json_extract(o.meta, '$.workflow_id') END) = (CASE WHEN instr({table_prefix}oban_jobs.meta, '"workflow_id"') = 0 THEN NULL WHEN json_valid({table_prefix}oban_jobs.meta) THEN json_extract({table_prefix}oban_jobs.meta, '$.workflow_id') END)
            AND o.state NOT IN ('completed', 'cancelled', 'discarded')))
      ORDER BY completed_at LIMIT :limit
    )
    UNION ALL
    SELECT id FROM (
      SELECT id FROM {table_prefix}oban_jobs INDEXED BY {table_prefix}oban_jobs_cancelled_at_index
      WHERE state = 'cancelled'
        AND cancelled_at < strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', -:max_age))
        AND NOT ((CASE WHEN instr(meta, '"workflow_id"') = 0 THEN NULL WHEN json_valid(meta) THEN json_extract(meta, '$.workflow_id') END) IS NOT NULL AND EXISTS (
          SELECT 1 FROM {table_prefix}oban_jobs AS o
          WHERE (CASE WHEN instr(o.meta, '"workflow_id"') = 0 THEN NULL WHEN json_valid(o.meta) THEN json_extract(o.meta, '$.workflow_id') END) = (CASE WHEN instr({table_prefix}oban_jobs.meta, '"workflow_id"') = 0 THEN NULL WHEN json_valid({table_prefix}oban_jobs.meta) THEN json_extract({table_prefix}oban_jobs.meta, '$.workflow_id') END)
            AND o.state NOT IN ('completed', 'cancelled', 'discarded')))
      ORDER BY cancelled_at LIMIT :limit
    )
    UNION ALL
    SELECT id FROM (
      SELECT id FROM {table_prefix}oban_jobs INDEXED BY {table_prefix}oban_jobs_discarded_at_index
      WHERE state = 'discarded'
        AND discarded_at < strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', -:max_age))
        AND NOT ((CASE WHEN instr(meta, '"workflow_id"') = 0 THEN NULL WHEN json_valid(meta) THEN json_extract(meta, '$.workflow_id') END) IS NOT NULL AND EXISTS (
          SELECT 1 FROM {table_prefix}oban_jobs AS o
          WHERE (CASE WHEN instr(o.meta, '"workflow_id"') = 0 THEN NULL WHEN json_valid(o.meta) THEN json_extract(o.meta, '$.workflow_id') END) = (CASE WHEN instr({table_prefix}oban_jobs.meta, '"workflow_id"') = 0 THEN NULL WHEN json_valid({table_prefix}oban_jobs.meta) THEN json_extract({table_prefix}oban_jobs.meta, '$.workflow_id') END)
            AND o.state NOT IN ('completed', 'cancelled', 'discarded')))
      ORDER BY discarded_at LIMIT :limit
    )
  )
  ORDER BY id
  LIMIT :limit
)
  AND state IN ('completed', 'cancelled', 'discarded')
RETURNING id
