-- $1 name. The first half of an election, as Elixir's Oban.Peers.Database runs it: forget
-- the instance's leases that have lapsed, whoever held them.
DELETE FROM {prefix}.oban_peers
WHERE name = $1::text AND expires_at < timezone('UTC', now())
