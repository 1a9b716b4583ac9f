-- $1 queue. Run before stage_all_jobs.sql when it failed on the unique index: of the queue's
-- scheduled/retryable jobs, the unique ones that would take their key by becoming available
-- while another job holds it, or an earlier one of them takes it, are discarded
-- (meta.unique_conflict), as stage_jobs.sql does for due jobs (docs/unique.md).
WITH entering AS (
  SELECT j.id, j.meta->>'uniq_key' AS key, j.scheduled_at
  FROM {prefix}.oban_jobs AS j
  WHERE j.queue = $1::text AND j.state IN ('scheduled', 'retryable')
    AND j.meta ? 'uniq_key'
    AND j.meta->'uniq_bmp' @> jsonb '1'
    AND NOT j.meta->'uniq_bmp' @> {prefix}.oban_uniq_state_bit(j.state)
), losers AS (
  SELECT e.id
  FROM entering AS e
  WHERE EXISTS (
      SELECT 1 FROM {prefix}.oban_jobs AS o
      WHERE o.meta->>'uniq_key' = e.key AND o.id <> e.id
        AND o.meta ? 'uniq_key' AND o.meta->'uniq_bmp' @> {prefix}.oban_uniq_state_bit(o.state)
    )
    OR EXISTS (
      SELECT 1 FROM entering AS f
      WHERE f.key = e.key AND (f.scheduled_at, f.id) < (e.scheduled_at, e.id)
    )
)
UPDATE {prefix}.oban_jobs AS j
SET state = 'discarded',
    discarded_at = timezone('UTC', now()),
    meta = j.meta || '{"unique_conflict": "staging"}'
FROM losers AS l
WHERE j.id = l.id
RETURNING j.queue
