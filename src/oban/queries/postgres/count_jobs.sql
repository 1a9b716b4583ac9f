-- oban.count_jobs: how many jobs each (state, queue) pair holds, without a pass over the
-- table. $1 states, $2 queues (NULL: all), $3 the exact limit.
-- The pairs come from a skip scan of the state/queue index (one probe per pair). A pair the
-- planner expects to hold well over $3 jobs is answered with that estimate
-- (oban_count_estimate, as Oban Met does); any other is counted up to $3 + 1 rows, and past
-- $3 the larger of the count and the estimate is taken. Estimated counts are flagged.
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
), chosen AS (
  SELECT p.state, p.queue, {prefix}.oban_count_estimate(p.state::text, p.queue) AS estimate
  FROM pairs AS p
  WHERE ($1::text[] IS NULL OR p.state::text = ANY($1::text[]))
    AND ($2::text[] IS NULL OR p.queue = ANY($2::text[]))
)
SELECT c.state::text, c.queue, n.counted > $3::integer,
  CASE WHEN n.counted > $3::integer THEN greatest(n.counted, c.estimate) ELSE n.counted END
FROM chosen AS c
CROSS JOIN LATERAL (
  SELECT CASE
    WHEN c.estimate > 10 * $3::integer THEN c.estimate
    ELSE (
      SELECT count(*)::integer FROM (
        SELECT 1 FROM {prefix}.oban_jobs AS j
        WHERE j.state = c.state AND j.queue = c.queue
        LIMIT $3::integer + 1
      ) AS b
    )
  END AS counted
) AS n
