-- $1: a JSON array of {id, state, fields, ...the new job's values}. Updates the listed fields
-- of each job that holds a key a duplicate insert met, while it is still in the state the
-- replacement was asked for. The job keeps its key entries whatever meta it is given.
WITH locked AS MATERIALIZED (
  -- In id order, so that two batches replacing the same jobs cannot deadlock.
  SELECT o.id FROM {prefix}.oban_jobs AS o
  WHERE o.id IN (SELECT (x->>'id')::bigint FROM jsonb_array_elements($1::jsonb) AS x)
  ORDER BY o.id
  FOR UPDATE
)
UPDATE {prefix}.oban_jobs AS o
SET state = CASE
      -- An available job moved into the future waits for it, as update_job makes it.
      WHEN r.fields ? 'scheduled_at' AND o.state = 'available'
        AND r.scheduled_at > timezone('UTC', now()) THEN 'scheduled'
      ELSE o.state
    END,
    args = CASE WHEN r.fields ? 'args' THEN r.args ELSE o.args END,
    max_attempts = CASE WHEN r.fields ? 'max_attempts' THEN r.max_attempts ELSE o.max_attempts END,
    meta = CASE
      WHEN r.fields ? 'meta' THEN r.meta || jsonb_build_object(
        'uniq', o.meta->'uniq', 'uniq_key', o.meta->'uniq_key', 'uniq_bmp', o.meta->'uniq_bmp'
      )
      ELSE o.meta
    END,
    priority = CASE WHEN r.fields ? 'priority' THEN r.priority ELSE o.priority END,
    queue = CASE WHEN r.fields ? 'queue' THEN r.queue ELSE o.queue END,
    scheduled_at = CASE
      WHEN r.fields ? 'scheduled_at' THEN COALESCE(r.scheduled_at, timezone('UTC', now()))
      ELSE o.scheduled_at
    END,
    tags = CASE WHEN r.fields ? 'tags' THEN r.tags ELSE o.tags END,
    worker = CASE WHEN r.fields ? 'worker' THEN r.worker ELSE o.worker END
FROM jsonb_to_recordset($1::jsonb) AS r (
  id bigint, state text, fields jsonb, queue text, worker text, args jsonb, meta jsonb,
  tags text[], priority integer, max_attempts integer, scheduled_at timestamp
)
WHERE o.id = r.id AND o.state = r.state::{prefix}.oban_job_state
  AND o.id IN (SELECT id FROM locked)
RETURNING o.id, o.state::text, o.queue, o.inserted_at, o.scheduled_at
