-- $1 ids. Makes finished or waiting jobs available now; running and already available jobs
-- are left alone. Exhausted jobs get one more attempt.
UPDATE {prefix}.oban_jobs
SET state = 'available',
    scheduled_at = timezone('UTC', now()),
    max_attempts = GREATEST(max_attempts, attempt + 1),
    completed_at = NULL,
    cancelled_at = NULL,
    discarded_at = NULL,
    meta = COALESCE(meta, '{}') || '{"uniq_bmp": []}'
WHERE id = ANY($1::bigint[])
  AND state NOT IN ('available', 'executing')
RETURNING id
