-- $1 name, $2 node. Gives up our lease (another node's row is left alone).
DELETE FROM {prefix}.oban_peers WHERE name = $1::text AND node = $2::text
