-- oban.count_jobs: how many jobs each (state, queue) pair holds, without a pass over the
-- table. $1 states, $2 queues (NULL: all), $3 the exact limit, $4 the schema name.
-- The pairs come from a skip scan of the state/queue index (one probe per pair). Each pair's
-- size is estimated from the table's statistics as the planner would (row count times the
-- frequency of the state times that of the queue: most_common_vals, else an even share of
-- the rest). A pair expected to hold well over $3 jobs is answered with that estimate; any
-- other is counted up to $3 + 1 rows, and past $3 the larger of the count and the estimate is
-- taken. Estimated counts are flagged.
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
), total AS (
  SELECT greatest(c.reltuples, 0)::float8 AS rows
  FROM pg_class AS c
  WHERE c.oid = format('%I.oban_jobs', $4::text)::regclass
), columns AS (
  SELECT s.attname::text AS name,
    coalesce(s.most_common_vals::text::text[], '{}') AS vals,
    coalesce(s.most_common_freqs, '{}') AS freqs,
    CASE WHEN s.n_distinct < 0 THEN -s.n_distinct * t.rows ELSE s.n_distinct END AS distinct_values
  FROM pg_stats AS s, total AS t
  WHERE s.schemaname = $4::text AND s.tablename = 'oban_jobs' AND s.attname IN ('state', 'queue')
), shares AS (
  -- Per column: the frequency of each common value, and the share of any other value.
  SELECT c.name, c.vals, c.freqs,
    (1 - coalesce((SELECT sum(f) FROM unnest(c.freqs) AS f), 0))
      / greatest(c.distinct_values - cardinality(c.vals), 1) AS other
  FROM columns AS c
), chosen AS (
  SELECT p.state, p.queue,
    (SELECT t.rows FROM total AS t)
      * coalesce((
          SELECT coalesce(s.freqs[array_position(s.vals, p.state::text)], s.other)
          FROM shares AS s WHERE s.name = 'state'), 0)
      * coalesce((
          SELECT coalesce(s.freqs[array_position(s.vals, p.queue)], s.other)
          FROM shares AS s WHERE s.name = 'queue'), 0)
      AS estimate
  FROM pairs AS p
  WHERE ($1::text[] IS NULL OR p.state::text = ANY($1::text[]))
    AND ($2::text[] IS NULL OR p.queue = ANY($2::text[]))
)
SELECT c.state::text, c.queue, n.counted > $3::integer,
  CASE
    WHEN n.counted <= $3::integer THEN n.counted
    WHEN c.estimate > $3::integer THEN greatest(n.counted, round(c.estimate)::bigint)
    -- Past the limit with no useful statistics (never analyzed, or a state or queue new
    -- since): the planner's estimate for the pair itself.
    ELSE greatest(n.counted, {prefix}.oban_count_estimate(c.state::text, c.queue))
  END
FROM chosen AS c
CROSS JOIN LATERAL (
  SELECT CASE
    WHEN c.estimate > 10 * $3::integer THEN round(c.estimate)::bigint
    ELSE (
      SELECT count(*) FROM (
        SELECT 1 FROM {prefix}.oban_jobs AS j
        WHERE j.state = c.state AND j.queue = c.queue
        LIMIT $3::integer + 1
      ) AS b
    )
  END AS counted
  OFFSET 0  -- kept a subquery: folded into the outer query, each count would run again
) AS n
