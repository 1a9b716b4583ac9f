-- oban.crons: the newest job of each cron entry (the latest meta.cron_at), if any is left.
-- :names, a JSON array of the entries' names. Each lookup is one probe of the cron index
-- (meta.cron_name, meta.cron_at), read from its end. Text columns are read as BLOBs, as in
-- get_jobs.sql.
SELECT j.id, CAST(j.worker AS BLOB), CAST(j.queue AS BLOB), j.attempt, j.max_attempts,
  j.priority, CAST(j.args AS BLOB), CAST(j.meta AS BLOB), CAST(j.errors AS BLOB),
  CAST(j.tags AS BLOB), CAST(j.attempted_by AS BLOB), CAST(j.inserted_at AS BLOB),
  CAST(j.attempted_at AS BLOB), CAST(j.scheduled_at AS BLOB), CAST(j.state AS BLOB),
  CAST(j.cancelled_at AS BLOB), CAST(j.completed_at AS BLOB), CAST(j.discarded_at AS BLOB)
FROM json_each(:names) AS c
JOIN {table_prefix}oban_jobs AS j ON j.id = (
  SELECT o.id FROM {table_prefix}oban_jobs AS o
  WHERE json_extract(o.meta, '$.cron_name') = c.value
  ORDER BY json_extract(o.meta, '$.cron_at') DESC
  LIMIT 1
)
