-- $1 ids. Deletes jobs that are not running.
DELETE FROM {prefix}.oban_jobs
WHERE id = ANY($1::bigint[]) AND state <> 'executing'
RETURNING id
