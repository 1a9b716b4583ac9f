-- :name instance name, :max_age seconds. Every node's producers of this instance that
-- heartbeated within max_age, with the ids of the jobs each is running (a JSON array).
SELECT p.uuid, p.node, p.queue, p.meta, p.started_at, p.updated_at,
       (SELECT json_group_array(j.id)
        FROM (SELECT id FROM {table_prefix}oban_jobs
              WHERE state = 'executing' AND queue = p.queue
                AND json_extract(attempted_by, '$[1]') = p.uuid
              ORDER BY id) AS j)
FROM {table_prefix}oban_producers AS p
WHERE p.name = :name
  AND p.updated_at >= strftime('%Y-%m-%d %H:%M:%f', 'now', printf('-%.3f seconds', :max_age))
ORDER BY p.queue, p.node, p.started_at
