-- Which oban tables exist in this file (for this prefix).
SELECT
  EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{table_prefix}oban_jobs'),
  EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{table_prefix}oban_producers'),
  EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '{table_prefix}oban_leaders')
