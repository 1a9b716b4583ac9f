-- :ids (JSON array), :reason. Cancels incomplete jobs, running ones included (as Elixir Oban
-- does). Two statements in one transaction: the first names the executing targets (their
-- node is signalled to stop them), the second cancels every target; a running job's errors
-- gain {attempt, at, error}. No row's own values can fail the statement: errors that are not
-- a JSON array start again as [], a meta that is not JSON as {}.
SELECT id
FROM {table_prefix}oban_jobs
WHERE id IN (SELECT value FROM json_each(:ids)) AND state = 'executing';

UPDATE {table_prefix}oban_jobs
SET state = 'cancelled',
    cancelled_at = strftime('%Y-%m-%d %H:%M:%f', 'now'),
    errors = CASE
      WHEN state = 'executing' THEN json_insert(CASE
        WHEN NOT json_valid(errors) THEN '[]'
        WHEN json_type(errors) = 'array' THEN errors
        ELSE '[]'
      END, '$[#]', json_object(
        'attempt', attempt,
        'at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
        'error', :reason
      ))
      ELSE errors
    END,
    meta = json_set(
      CASE WHEN json_valid(meta) THEN meta ELSE '{}' END,
      '$.cancel_attempted_at',
      strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
    )
WHERE id IN (SELECT value FROM json_each(:ids))
  AND state IN ('available', 'scheduled', 'retryable', 'suspended', 'executing')
RETURNING id;
