-- :rescue_after seconds, :producer_max_age seconds, :limit.
-- An executing job is an orphan when the producer that claimed it (attempted_by[1], its
-- uuid) has a stale heartbeat, or when no producer row knows it and it started over
-- rescue_after ago (an hour by default, the same option as on PostgreSQL, where it covers
-- Elixir nodes' jobs). A job whose producer still heartbeats is never rescued, however long
-- it runs. Orphans with attempts left go back to available (meta.rescued counts the rescues);
-- the others are discarded, meta untouched. Available jobs that already used every attempt
-- are discarded too (the fetch skips them).
-- No row's own values can fail the statement (and with it every rescue): an attempted_by
-- that is not JSON names no producer, a meta that is not a JSON object starts again as {},
-- and meta.rescued counts only as a whole number from 0 to 2^53 - 1 (else as 0).
UPDATE {table_prefix}oban_jobs
SET state = CASE WHEN attempt >= max_attempts THEN 'discarded' ELSE 'available' END,
    discarded_at = CASE
      WHEN attempt >= max_attempts THEN strftime('%Y-%m-%d %H:%M:%f', 'now') ELSE discarded_at
    END,
    meta = CASE
      WHEN state = 'executing' AND attempt < max_attempts
        THEN json_set(
          CASE WHEN NOT json_valid(meta) THEN '{}' WHEN json_type(meta) = 'object' THEN meta ELSE '{}' END,
          '$.rescued',
          CASE
            WHEN NOT json_valid(meta) THEN 0
            WHEN json_type(meta, '$.rescued') NOT IN ('integer', 'real') THEN 0
            WHEN (meta ->> '$.rescued') BETWEEN 0 AND 9007199254740991
                 AND (meta ->> '$.rescued') = CAST(meta ->> '$.rescued' AS INTEGER)
              THEN CAST(meta ->> '$.rescued' AS INTEGER)
            ELSE 0
          END + 1
        )
      ELSE meta
    END
WHERE id IN (
  SELECT j.id
  FROM {table_prefix}oban_jobs AS j
  LEFT JOIN (
    SELECT uuid,
           updated_at >= strftime('%Y-%m-%d %H:%M:%f', 'now',
                                  printf('%+.3f seconds', -:producer_max_age)) AS fresh
    FROM {table_prefix}oban_producers
  ) AS p ON p.uuid = CASE
    WHEN json_valid(j.attempted_by) THEN json_extract(j.attempted_by, '$[1]')
  END
  WHERE (
      j.state = 'executing'
      AND (
        p.fresh = 0
        OR (p.uuid IS NULL
            AND j.attempted_at < strftime('%Y-%m-%d %H:%M:%f', 'now',
                                          printf('%+.3f seconds', -:rescue_after)))
      )
    )
    OR (j.state = 'available' AND j.attempt >= j.max_attempts)
  ORDER BY j.id
  LIMIT :limit
)
RETURNING id, state
