-- oban.count_jobs: how many jobs each (state, queue) pair holds, without a pass over the
-- table. $1 states, $2 queues (NULL: all), $3 the exact limit.
-- The pairs come from a skip scan of the state/queue index (one probe per pair); each pair is
-- counted up to $3 + 1 rows, and a pair past $3 is answered with the planner's estimate
-- (oban_count_estimate, as Oban Met does), flagged as such.
WITH RECURSIVE pairs (state, queue) AS (
  (SELECT state, queue FROM {prefix}.oban_jobs ORDER BY state, queue LIMIT 1)
  UNION ALL
  SELECT n.state, n.queue
  FROM pairs AS p
  CROSS JOIN LATERAL (
    SELECT j.state, j.queue FROM {prefix}.oban_jobs AS j
    WHERE (j.state, j.queue) > (p.state, p.queue)
    ORDER BY j.state, j.queue
    LIMIT 1
  ) AS n
)
SELECT p.state::text, p.queue, c.n > $3::integer,
  CASE WHEN c.n > $3::integer
    THEN greatest(c.n, {prefix}.oban_count_estimate(p.state::text, p.queue))
    ELSE c.n
  END
FROM pairs AS p
CROSS JOIN LATERAL (
  SELECT count(*)::integer AS n FROM (
    SELECT 1 FROM {prefix}.oban_jobs AS j
    WHERE j.state = p.state AND j.queue = p.queue
    LIMIT $3::integer + 1
  ) AS b
) AS c
WHERE ($1::text[] IS NULL OR p.state::text = ANY($1::text[]))
  AND ($2::text[] IS NULL OR p.queue = ANY($2::text[]))
