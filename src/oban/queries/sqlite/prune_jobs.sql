-- :max_age seconds, :limit. Deletes finished jobs older than max_age, each state through its
-- own partial index (INDEXED BY: with statistics SQLite may otherwise walk the state index
-- over every finished row), oldest first.
DELETE FROM {table_prefix}oban_jobs
WHERE id IN (
  SELECT id FROM (
    SELECT id FROM (
      SELECT id FROM {table_prefix}oban_jobs INDEXED BY {table_prefix}oban_jobs_completed_at_index
      WHERE state = 'completed'
        AND completed_at < strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', -:max_age))
      ORDER BY completed_at LIMIT :limit
    )
    UNION ALL
    SELECT id FROM (
      SELECT id FROM {table_prefix}oban_jobs INDEXED BY {table_prefix}oban_jobs_cancelled_at_index
      WHERE state = 'cancelled'
        AND cancelled_at < strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', -:max_age))
      ORDER BY cancelled_at LIMIT :limit
    )
    UNION ALL
    SELECT id FROM (
      SELECT id FROM {table_prefix}oban_jobs INDEXED BY {table_prefix}oban_jobs_discarded_at_index
      WHERE state = 'discarded'
        AND discarded_at < strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', -:max_age))
      ORDER BY discarded_at LIMIT :limit
    )
  )
  ORDER BY id
  LIMIT :limit
)
  AND state IN ('completed', 'cancelled', 'discarded')
RETURNING id
