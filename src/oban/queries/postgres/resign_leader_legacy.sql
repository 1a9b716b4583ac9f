-- $1 name, $2 node. Gives up our oban_leaders lease (see elect_leader_legacy.sql).
DELETE FROM {prefix}.oban_leaders WHERE name = $1::text AND node = $2::text
