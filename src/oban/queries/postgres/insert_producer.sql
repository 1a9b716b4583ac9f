-- $1 uuid, $2 name, $3 node, $4 queue, $5 meta (JSON text)
INSERT INTO {prefix}.oban_producers (uuid, name, node, queue, meta, started_at, updated_at)
VALUES ($1::uuid, $2::text, $3::text, $4::text, $5::jsonb,
        timezone('UTC', now()), timezone('UTC', now()))
ON CONFLICT (uuid) DO UPDATE SET meta = excluded.meta, updated_at = excluded.updated_at
