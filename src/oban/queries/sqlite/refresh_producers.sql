-- :producers, a JSON array of {uuid, meta}. Heartbeats this node's producers and returns the
-- uuids that still had a row (the others must be restored).
UPDATE {table_prefix}oban_producers AS p
SET updated_at = strftime('%Y-%m-%d %H:%M:%f', 'now'), meta = r.meta
FROM (
  SELECT e.value ->> '$.uuid' AS uuid, e.value ->> '$.meta' AS meta
  FROM json_each(:producers) AS e
) AS r
WHERE p.uuid = r.uuid
RETURNING uuid
