-- oban.job_stats: jobs finished in the last $1 seconds, per $2-second bucket (aligned on the
-- epoch; the window ends with the bucket that holds now()) and queue: counts by final state,
-- and nearest-rank p50/p95 of the wait (attempted_at - scheduled_at) and of the run time
-- (completed_at - attempted_at, completed jobs only). Grouping sets give, in one pass, each
-- (bucket, queue), each bucket, each queue and the whole window; NULL stands for "all".
-- Bounded: the newest $3 jobs of each final state are read backwards along that state's
-- partial *_at index, then the newest $3 of those; the second column is when the oldest
-- job kept finished if $3 were kept (the figures before it are not whole), else NULL.
-- The first row always comes (the bounds), with NULL groups when no job finished.
WITH bounds AS (
  SELECT u.until, to_timestamp(u.until - $1::double precision) AT TIME ZONE 'UTC' AS since
  FROM (SELECT (floor(date_part('epoch', now()) / $2::integer) + 1) * $2::integer AS until) AS u
), finished AS (
  (SELECT 'completed' AS state, j.queue, j.completed_at AS at, j.attempted_at, j.scheduled_at
   FROM {prefix}.oban_jobs AS j
   WHERE j.state = 'completed' AND j.completed_at >= (SELECT b.since FROM bounds AS b)
   ORDER BY j.completed_at DESC
   LIMIT $3::integer)
  UNION ALL
  (SELECT 'discarded', j.queue, j.discarded_at, j.attempted_at, j.scheduled_at
   FROM {prefix}.oban_jobs AS j
   WHERE j.state = 'discarded' AND j.discarded_at >= (SELECT b.since FROM bounds AS b)
   ORDER BY j.discarded_at DESC
   LIMIT $3::integer)
  UNION ALL
  (SELECT 'cancelled', j.queue, j.cancelled_at, j.attempted_at, j.scheduled_at
   FROM {prefix}.oban_jobs AS j
   WHERE j.state = 'cancelled' AND j.cancelled_at >= (SELECT b.since FROM bounds AS b)
   ORDER BY j.cancelled_at DESC
   LIMIT $3::integer)
), kept AS (
  SELECT f.* FROM finished AS f ORDER BY f.at DESC LIMIT $3::integer
), measured AS (
  SELECT k.state, k.queue,
    (floor(date_part('epoch', k.at) / $2::integer) * $2::integer)::bigint AS bucket,
    date_part('epoch', k.attempted_at - k.scheduled_at) AS wait,
    CASE WHEN k.state = 'completed' THEN date_part('epoch', k.at - k.attempted_at) END AS run
  FROM kept AS k
)
SELECT b.until::bigint,
  (SELECT date_part('epoch', min(k.at)) FROM kept AS k HAVING count(*) >= $3::integer),
  g.bucket, g.queue, g.completed, g.discarded, g.cancelled,
  g.waits[1], g.waits[2], g.runs[1], g.runs[2], g.grouped
FROM bounds AS b
LEFT JOIN (
  SELECT m.bucket, m.queue,
    count(*) FILTER (WHERE m.state = 'completed') AS completed,
    count(*) FILTER (WHERE m.state = 'discarded') AS discarded,
    count(*) FILTER (WHERE m.state = 'cancelled') AS cancelled,
    percentile_disc(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY m.wait) AS waits,
    percentile_disc(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY m.run) AS runs,
    true AS grouped
  FROM measured AS m
  GROUP BY GROUPING SETS ((m.bucket, m.queue), (m.bucket), (m.queue), ())
) AS g ON true
