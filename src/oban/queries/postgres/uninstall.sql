-- Removes every oban object from {prefix}; the schema itself stays.
DROP TABLE IF EXISTS {prefix}.oban_jobs;
DROP TABLE IF EXISTS {prefix}.oban_peers;
DROP TABLE IF EXISTS {prefix}.oban_leaders;
DROP TABLE IF EXISTS {prefix}.oban_producers;
DROP FUNCTION IF EXISTS {prefix}.oban_count_estimate(text, text);
DROP FUNCTION IF EXISTS {prefix}.oban_uniq_state_bit({prefix}.oban_job_state);
DROP TYPE IF EXISTS {prefix}.oban_job_state;
