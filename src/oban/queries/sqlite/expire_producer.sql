-- :uuid. Marks a stopping producer's heartbeat as long gone (a timestamp before any real
-- one), so the lifeline rescues the jobs it had to abandon at once.
UPDATE {table_prefix}oban_producers
SET updated_at = '0000-01-01 00:00:00.000', meta = json_set(meta, '$.shutdown', json('true'))
WHERE uuid = :uuid
