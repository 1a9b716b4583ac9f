-- $1 uuids, $2 metas (JSON texts, same order). Heartbeats this node's producers and returns
-- the uuids that still had a row (the others must be restored).
UPDATE {prefix}.oban_producers AS p
SET updated_at = timezone('UTC', now()), meta = r.meta::jsonb
FROM unnest($1::uuid[], $2::text[]) AS r (uuid, meta)
WHERE p.uuid = r.uuid
RETURNING p.uuid::text
