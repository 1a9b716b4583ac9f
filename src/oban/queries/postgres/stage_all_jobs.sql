-- $1 queue. Makes every scheduled/retryable job of the queue available, however far ahead it
-- is scheduled (testing: drain_queue with_scheduled).
UPDATE {prefix}.oban_jobs
SET state = 'available'
WHERE queue = $1::text AND state IN ('scheduled', 'retryable')
RETURNING id
