-- Leadership on a schema without Elixir's oban_peers (an oban-py 0.7.0 layout not yet
-- upgraded by `oban install`; no Elixir node runs on one), in oban_leaders.
-- $1 name, $2 node, $3 ttl seconds. Takes the lead when nobody holds it or the holder's lease
-- expired, or extends our own lease. Returns the row only when this node leads.
INSERT INTO {prefix}.oban_leaders AS l (name, node, elected_at, expires_at)
VALUES ($1::text, $2::text, timezone('UTC', now()),
        timezone('UTC', now()) + make_interval(secs => $3::double precision))
ON CONFLICT (name) DO UPDATE
SET node = excluded.node,
    elected_at = CASE WHEN l.node = excluded.node THEN l.elected_at ELSE excluded.elected_at END,
    expires_at = excluded.expires_at
WHERE l.node = excluded.node OR l.expires_at < timezone('UTC', now())
RETURNING l.node
