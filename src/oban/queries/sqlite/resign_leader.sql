-- :name, :node
DELETE FROM {table_prefix}oban_leaders WHERE name = :name AND node = :node
