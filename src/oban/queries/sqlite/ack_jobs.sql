-- :acks, a JSON array of acks. Each update is guarded by the state and attempted_at the job
-- was fetched with, so a stale ack (the job was rescued meanwhile) changes nothing.
-- errors gains {attempt, at, error} when an error is given. meta: the engine normally sends
-- the job's whole new meta, merged in Python (replace_meta), because SQLite's JSON functions
-- round doubles; otherwise it is patched here and a snooze increments meta.snoozed.
-- schedule_in is seconds from now.
-- A row's own values cannot fail the statement (and with it every other ack): errors that
-- are not a JSON array start again as [], and meta.snoozed counts only as a whole number
-- from 0 to 2^53 - 1 (anything else counts as 0), as the engine's Python merge reads it.
UPDATE {table_prefix}oban_jobs AS j
SET state = a.state,
    attempt = j.attempt + a.attempt_change,
    completed_at = CASE
      WHEN a.state = 'completed' THEN strftime('%Y-%m-%d %H:%M:%f', 'now') ELSE j.completed_at
    END,
    cancelled_at = CASE
      WHEN a.state = 'cancelled' THEN strftime('%Y-%m-%d %H:%M:%f', 'now') ELSE j.cancelled_at
    END,
    discarded_at = CASE
      WHEN a.state = 'discarded' THEN strftime('%Y-%m-%d %H:%M:%f', 'now') ELSE j.discarded_at
    END,
    scheduled_at = CASE
      WHEN a.schedule_in IS NULL THEN j.scheduled_at
      ELSE strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', a.schedule_in))
    END,
    errors = CASE
      WHEN a.error IS NULL THEN j.errors
      ELSE json_insert(CASE
        WHEN NOT json_valid(j.errors) THEN '[]'
        WHEN json_type(j.errors) = 'array' THEN j.errors
        ELSE '[]'
      END, '$[#]', json_object(
        'attempt', j.attempt,
        'at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'),
        'error', a.error
      ))
    END,
    meta = CASE
      WHEN a.replace_meta THEN a.meta
      WHEN a.meta IS NULL AND NOT a.snooze THEN j.meta
      ELSE json_patch(
        json_patch(CASE WHEN json_valid(j.meta) THEN j.meta ELSE '{}' END, COALESCE(a.meta, '{}')),
        CASE
          WHEN a.snooze THEN json_object('snoozed', CASE
            WHEN NOT json_valid(j.meta) THEN 0
            WHEN json_type(j.meta, '$.snoozed') NOT IN ('integer', 'real') THEN 0
            WHEN (j.meta ->> '$.snoozed') BETWEEN 0 AND 9007199254740991
                 AND (j.meta ->> '$.snoozed') = CAST(j.meta ->> '$.snoozed' AS INTEGER)
              THEN CAST(j.meta ->> '$.snoozed' AS INTEGER)
            ELSE 0
          END + 1)
          ELSE '{}'
        END
      )
    END
FROM (
  SELECT
    e.value ->> '$.id' AS id,
    e.value ->> '$.attempted_at' AS attempted_at,
    e.value ->> '$.state' AS state,
    e.value ->> '$.attempt_change' AS attempt_change,
    e.value ->> '$.schedule_in' AS schedule_in,
    e.value ->> '$.error' AS error,
    e.value ->> '$.meta' AS meta,
    COALESCE(e.value ->> '$.snooze', 0) AS snooze,
    COALESCE(e.value ->> '$.replace_meta', 0) AS replace_meta
  FROM json_each(:acks) AS e
) AS a
-- The unary + keeps SQLite from walking the state index per ack: each ack is looked up by
-- its primary key instead (10 ms -> 1.8 ms for 100 acks).
WHERE j.id = a.id AND +j.state = 'executing' AND j.attempted_at = a.attempted_at
RETURNING id
