-- :queue. Makes every scheduled/retryable job of the queue available, however far ahead it is
-- scheduled (testing: drain_queue with_scheduled).
UPDATE {table_prefix}oban_jobs
SET state = 'available'
WHERE queue = :queue AND state IN ('scheduled', 'retryable')
RETURNING id
