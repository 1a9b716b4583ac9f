-- :jobs, a JSON array of {id, state, fields, ...the new job's values}. Updates the listed
-- fields of each job that holds a key a duplicate insert met, while it is still in the state
-- the replacement was asked for. The job keeps its key entries whatever meta it is given.
UPDATE {table_prefix}oban_jobs AS o
SET state = CASE
      -- An available job moved into the future waits for it, as update_job makes it.
      WHEN r.f ->> '$.scheduled_at' AND o.state = 'available'
        AND r.value ->> '$.scheduled_at' > strftime('%Y-%m-%d %H:%M:%f', 'now') THEN 'scheduled'
      ELSE o.state
    END,
    args = CASE WHEN r.f ->> '$.args' THEN r.value ->> '$.args' ELSE o.args END,
    max_attempts = CASE
      WHEN r.f ->> '$.max_attempts' THEN r.value ->> '$.max_attempts' ELSE o.max_attempts
    END,
    meta = CASE
      WHEN r.f ->> '$.meta' THEN json_set(
        r.value ->> '$.meta',
        '$.uniq', json(o.meta) -> '$.uniq',
        '$.uniq_key', json(o.meta) ->> '$.uniq_key',
        '$.uniq_bmp', json(o.meta) -> '$.uniq_bmp'
      )
      ELSE o.meta
    END,
    priority = CASE WHEN r.f ->> '$.priority' THEN r.value ->> '$.priority' ELSE o.priority END,
    queue = CASE WHEN r.f ->> '$.queue' THEN r.value ->> '$.queue' ELSE o.queue END,
    scheduled_at = CASE
      WHEN r.f ->> '$.scheduled_at'
        THEN COALESCE(r.value ->> '$.scheduled_at', strftime('%Y-%m-%d %H:%M:%f', 'now'))
      ELSE o.scheduled_at
    END,
    tags = CASE WHEN r.f ->> '$.tags' THEN r.value ->> '$.tags' ELSE o.tags END,
    worker = CASE WHEN r.f ->> '$.worker' THEN r.value ->> '$.worker' ELSE o.worker END
FROM (
  SELECT j.value, (
    SELECT json_group_object(f.value, json('true')) FROM json_each(j.value, '$.fields') AS f
  ) AS f
  FROM json_each(:jobs) AS j
) AS r
WHERE o.id = r.value ->> '$.id' AND o.state = r.value ->> '$.state'
RETURNING id, state, queue, inserted_at, scheduled_at
