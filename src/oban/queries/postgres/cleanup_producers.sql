-- $1 max_age seconds. Deletes producers whose heartbeat is older than max_age once none of
-- their jobs is still executing (the lifeline rescues those first).
DELETE FROM {prefix}.oban_producers AS p
WHERE p.updated_at < timezone('UTC', now()) - make_interval(secs => $1::double precision)
  AND NOT EXISTS (
    SELECT 1 FROM {prefix}.oban_jobs AS j
    WHERE j.state = 'executing' AND j.attempted_by[2] = p.uuid::text
  )
RETURNING p.uuid
