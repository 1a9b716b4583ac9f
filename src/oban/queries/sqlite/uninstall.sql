-- Removes every oban table (and with them their indexes) of this prefix from the file; other
-- tables in the file stay. Runs in one BEGIN IMMEDIATE transaction.
DROP TABLE IF EXISTS {table_prefix}oban_jobs;
DROP TABLE IF EXISTS {table_prefix}oban_leaders;
DROP TABLE IF EXISTS {table_prefix}oban_producers;
DROP TABLE IF EXISTS {table_prefix}oban_signals;
