-- :keys, a JSON array. The rows that hold them: the condition is the one of
-- oban_jobs_unique_index, so the index answers it.
SELECT (CASE WHEN instr(meta, '"uniq_key"') = 0 THEN NULL WHEN json_valid(meta) THEN json_extract(meta, '$.uniq_key') END),
       id, state, queue, inserted_at, scheduled_at
FROM {table_prefix}oban_jobs
WHERE (CASE WHEN instr(meta, '"uniq_key"') = 0 THEN NULL WHEN json_valid(meta) THEN json_extract(meta, '$.uniq_key') END)
      IN (SELECT value FROM json_each(:keys))
  AND (CASE WHEN instr(meta, '"uniq_key"') = 0 THEN NULL WHEN json_valid(meta) THEN json_extract(meta, '$.uniq_key') END) IS NOT NULL
  AND instr(
    (CASE WHEN instr(meta, '"uniq_key"') = 0 THEN NULL WHEN json_valid(meta) THEN json_extract(meta, '$.uniq_bmp') END),
    CASE state
      WHEN 'scheduled' THEN '0' WHEN 'available' THEN '1' WHEN 'executing' THEN '2'
      WHEN 'retryable' THEN '3' WHEN 'completed' THEN '4' WHEN 'cancelled' THEN '5'
      WHEN 'discarded' THEN '6' WHEN 'suspended' THEN '7'
    END
  ) > 0
