-- $1 instance name, $2 max_age seconds. Every node's producers of this instance that
-- heartbeated within max_age, with the ids of the jobs each is running.
SELECT p.uuid::text, p.node, p.queue, p.meta, p.started_at, p.updated_at,
       ARRAY(
         SELECT j.id
         FROM {prefix}.oban_jobs AS j
         WHERE j.state = 'executing' AND j.queue = p.queue AND j.attempted_by[2] = p.uuid::text
         ORDER BY j.id
       )
FROM {prefix}.oban_producers AS p
WHERE p.name = $1::text
  AND p.updated_at >= timezone('UTC', now()) - make_interval(secs => $2::double precision)
ORDER BY p.queue, p.node, p.started_at
