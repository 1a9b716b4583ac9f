-- :channel, :payloads (a JSON array of payload strings), :origin (the sending process).
INSERT INTO {table_prefix}oban_signals (channel, payload, origin)
SELECT :channel, value, :origin FROM json_each(:payloads)
