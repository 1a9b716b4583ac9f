-- :max_age seconds. Deletes signals every node has had time to read.
DELETE FROM {table_prefix}oban_signals
WHERE inserted_at < strftime('%Y-%m-%d %H:%M:%f', 'now', printf('-%.3f seconds', :max_age))
