-- The id of the newest signal (0 when there is none): a starting node reads only what follows.
SELECT COALESCE(max(id), 0) FROM {table_prefix}oban_signals
