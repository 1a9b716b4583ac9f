-- :uuid
DELETE FROM {table_prefix}oban_producers WHERE uuid = :uuid
