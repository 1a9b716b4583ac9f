-- $1 name, $2 node
DELETE FROM {prefix}.oban_leaders WHERE name = $1::text AND node = $2::text
