-- Empties every oban table (testing).
TRUNCATE {prefix}.oban_jobs, {prefix}.oban_leaders, {prefix}.oban_producers RESTART IDENTITY CASCADE
