-- :after (the last id seen), :origin (this process: its own signals were delivered in
-- process already), :limit. The signals other processes sent since, oldest first.
SELECT id, channel, payload
FROM {table_prefix}oban_signals
WHERE id > :after AND origin <> :origin
ORDER BY id
LIMIT :limit
