-- $1 limit. The workflows that have suspended jobs (for the sweeper that releases what a
-- node's crash between an ack and its release check left waiting), through the state index.
SELECT DISTINCT meta->>'workflow_id'
FROM (
  SELECT meta FROM {prefix}.oban_jobs
  WHERE state = 'suspended' AND jsonb_typeof(meta->'workflow_id') = 'string'
  LIMIT $1::integer
) AS s
