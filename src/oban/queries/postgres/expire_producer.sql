-- $1 uuid. Marks a stopping producer's heartbeat as long gone, so the lifeline rescues the
-- jobs it had to abandon at once.
UPDATE {prefix}.oban_producers
SET updated_at = '-infinity', meta = meta || '{"shutdown": true}'
WHERE uuid = $1::uuid
