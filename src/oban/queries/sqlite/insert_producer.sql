-- :uuid, :name, :node, :queue, :meta (JSON text)
INSERT INTO {table_prefix}oban_producers (uuid, name, node, queue, meta, started_at, updated_at)
VALUES (:uuid, :name, :node, :queue, json(:meta),
        strftime('%Y-%m-%d %H:%M:%f', 'now'), strftime('%Y-%m-%d %H:%M:%f', 'now'))
ON CONFLICT (uuid) DO UPDATE SET meta = excluded.meta, updated_at = excluded.updated_at
