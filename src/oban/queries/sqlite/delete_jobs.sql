-- :ids (JSON array). Deletes jobs that are not running.
DELETE FROM {table_prefix}oban_jobs
WHERE id IN (SELECT value FROM json_each(:ids)) AND state <> 'executing'
RETURNING id
