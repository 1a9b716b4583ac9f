-- :name, :node, :ttl seconds. Takes the lead when nobody holds it or the holder's lease
-- expired, or extends our own lease. Returns the row only when this node leads.
INSERT INTO {table_prefix}oban_leaders AS l (name, node, elected_at, expires_at)
VALUES (:name, :node, strftime('%Y-%m-%d %H:%M:%f', 'now'),
        strftime('%Y-%m-%d %H:%M:%f', 'now', printf('%+.3f seconds', :ttl)))
ON CONFLICT (name) DO UPDATE
SET node = excluded.node,
    elected_at = CASE WHEN l.node = excluded.node THEN l.elected_at ELSE excluded.elected_at END,
    expires_at = excluded.expires_at
WHERE l.node = excluded.node OR l.expires_at < strftime('%Y-%m-%d %H:%M:%f', 'now')
RETURNING node
