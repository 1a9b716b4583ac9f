-- oban.job_stats: jobs finished in the last :window seconds, per :bucket-second bucket
-- (aligned on the epoch; the window ends with the bucket that holds now) and queue: counts by
-- final state, and each job's wait (attempted_at - scheduled_at) and run time (completed_at -
-- attempted_at, completed jobs only) in whole milliseconds (what the timestamps keep), as
-- comma-separated lists: SQLite has no percentile aggregate, and ranking every group's rows
-- with window functions costs many times more than the engine sorting these lists.
-- Bounded: the newest :limit finished jobs, read backwards along each final state's partial
-- *_at index (named: without statistics the planner would take the state index and sort every
-- job of the state), the three merged in order (MERGE UNION ALL: no sort, and no more than
-- :limit rows read); the second column is when the oldest job kept finished if :limit were
-- kept (the figures before it are not whole), else NULL. The first row always comes (the
-- bounds), with NULL groups when no job finished.
WITH bounds AS (
  SELECT u.until,
    strftime('%Y-%m-%d %H:%M:%f', u.until - :window, 'unixepoch') AS since
  FROM (SELECT (unixepoch() / :bucket + 1) * :bucket AS until) AS u
), kept AS (
  SELECT 'completed' AS state, j.queue, j.completed_at AS at, j.attempted_at, j.scheduled_at
  FROM {table_prefix}oban_jobs AS j INDEXED BY {table_prefix}oban_jobs_completed_at_index
  WHERE j.state = 'completed' AND j.completed_at >= (SELECT b.since FROM bounds AS b)
  UNION ALL
  SELECT 'discarded', j.queue, j.discarded_at, j.attempted_at, j.scheduled_at
  FROM {table_prefix}oban_jobs AS j INDEXED BY {table_prefix}oban_jobs_discarded_at_index
  WHERE j.state = 'discarded' AND j.discarded_at >= (SELECT b.since FROM bounds AS b)
  UNION ALL
  SELECT 'cancelled', j.queue, j.cancelled_at, j.attempted_at, j.scheduled_at
  FROM {table_prefix}oban_jobs AS j INDEXED BY {table_prefix}oban_jobs_cancelled_at_index
  WHERE j.state = 'cancelled' AND j.cancelled_at >= (SELECT b.since FROM bounds AS b)
  ORDER BY at DESC
  LIMIT :limit
), measured AS (
  SELECT k.state, k.queue, unixepoch(k.at) / :bucket * :bucket AS bucket,
    CAST(round((julianday(k.attempted_at) - julianday(k.scheduled_at)) * 86400000.0) AS INTEGER)
      AS wait,
    CASE WHEN k.state = 'completed' THEN
      CAST(round((julianday(k.at) - julianday(k.attempted_at)) * 86400000.0) AS INTEGER)
    END AS run
  FROM kept AS k
)
SELECT b.until,
  (SELECT unixepoch(min(k.at)) FROM kept AS k HAVING count(*) >= :limit),
  m.bucket, CAST(m.queue AS BLOB),
  sum(m.state = 'completed'), sum(m.state = 'discarded'), sum(m.state = 'cancelled'),
  group_concat(m.wait), group_concat(m.run)
FROM bounds AS b
LEFT JOIN measured AS m ON 1
GROUP BY m.bucket, m.queue
