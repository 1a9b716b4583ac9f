-- :limit. The workflows that have suspended jobs (for the sweeper), through the state index.
SELECT DISTINCT wid FROM (
  SELECT (CASE WHEN instr(meta, '"workflow_id"') = 0 THEN NULL WHEN json_valid(meta) THEN json_extract(meta, '$.workflow_id') END) AS wid
  FROM {table_prefix}oban_jobs
  WHERE state = 'suspended'
  LIMIT :limit
)
WHERE wid IS NOT NULL AND typeof(wid) = 'text'
