-- Empties every oban table of this prefix and restarts the job ids (testing). Runs in one
-- BEGIN IMMEDIATE transaction.
DELETE FROM {table_prefix}oban_jobs;
DELETE FROM {table_prefix}oban_leaders;
DELETE FROM {table_prefix}oban_producers;
DELETE FROM {table_prefix}oban_signals;
DELETE FROM sqlite_sequence WHERE name = '{table_prefix}oban_jobs';
