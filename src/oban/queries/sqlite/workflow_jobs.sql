-- :wid. Every job of the workflow (through oban_jobs_workflow_index), oldest first.
SELECT id, state, json_extract(meta, '$.name'), json_extract(meta, '$.deps')
FROM {table_prefix}oban_jobs
WHERE (CASE WHEN instr(meta, '"workflow_id"') = 0 THEN NULL WHEN json_valid(meta) THEN json_extract(meta, '$.workflow_id') END) = :wid
ORDER BY id
