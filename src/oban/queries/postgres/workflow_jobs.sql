-- $1 workflow id. Every job of the workflow (through the meta GIN index), oldest first.
SELECT id, state::text, meta->>'name', meta->'deps'
FROM {prefix}.oban_jobs
WHERE meta @> jsonb_build_object('workflow_id', $1::text)
ORDER BY id
