-- :max_age seconds. Deletes producers whose heartbeat is older than max_age once none of
-- their jobs is still executing (the lifeline rescues those first).
DELETE FROM {table_prefix}oban_producers AS p
WHERE p.updated_at < strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', -:max_age))
  AND NOT EXISTS (
    SELECT 1 FROM {table_prefix}oban_jobs AS j
    WHERE j.state = 'executing' AND json_extract(j.attempted_by, '$[1]') = p.uuid
  )
RETURNING uuid
