-- $1 name, $2 node, $3 lease seconds. The second half of an election (after
-- delete_expired_peers, in the same transaction), with Elixir's semantics: insert our lease,
-- or extend it when the row is already ours; a live row of another node (Python or Elixir)
-- is left alone. Returns a row only when this node leads.
INSERT INTO {prefix}.oban_peers AS p (name, node, started_at, expires_at)
VALUES ($1::text, $2::text, timezone('UTC', now()),
        timezone('UTC', now()) + make_interval(secs => $3::double precision))
ON CONFLICT (name) DO UPDATE
SET expires_at = excluded.expires_at
WHERE p.node = excluded.node
RETURNING p.node
