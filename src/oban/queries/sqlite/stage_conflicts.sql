-- :queues, :limit as in stage_jobs.sql (:every true: however far ahead a job is scheduled, for
-- stage_all_jobs.sql), run just before it in the same transaction when it alone failed on the
-- unique index. Of the
-- jobs it is about to stage, the unique ones that would take their key by becoming available
-- (available is in their uniq_bmp, their current state is not) while another job holds that
-- key, or an earlier job of the batch takes it, are discarded (meta.unique_conflict) instead
-- of failing the staging statement (docs/unique.md). Returns their queues.
WITH due AS (
  SELECT id, scheduled_at, (CASE WHEN instr(meta, '"uniq_key"') = 0 THEN NULL WHEN json_valid(meta) THEN json_extract(meta, '$.uniq_key') END) AS key
  FROM {table_prefix}oban_jobs
  WHERE state IN ('scheduled', 'retryable')
    AND (:every OR scheduled_at <= strftime('%Y-%m-%d %H:%M:%f', 'now'))
    AND (:queues IS NULL OR queue IN (SELECT value FROM json_each(:queues)))
    AND (CASE WHEN instr(meta, '"uniq_key"') = 0 THEN NULL WHEN json_valid(meta) THEN json_extract(meta, '$.uniq_key') END) IS NOT NULL
    AND instr((CASE WHEN instr(meta, '"uniq_key"') = 0 THEN NULL WHEN json_valid(meta) THEN json_extract(meta, '$.uniq_bmp') END), '1') > 0
    AND instr(
      (CASE WHEN instr(meta, '"uniq_key"') = 0 THEN NULL WHEN json_valid(meta) THEN json_extract(meta, '$.uniq_bmp') END),
      CASE state WHEN 'scheduled' THEN '0' ELSE '3' END
    ) = 0
  ORDER BY scheduled_at, id
  LIMIT :limit
)
UPDATE {table_prefix}oban_jobs
SET state = 'discarded',
    discarded_at = strftime('%Y-%m-%d %H:%M:%f', 'now'),
    meta = json_set(meta, '$.unique_conflict', 'staging')
WHERE id IN (
  SELECT e.id
  FROM due AS e
  WHERE EXISTS (
      SELECT 1 FROM {table_prefix}oban_jobs AS o
      WHERE (CASE WHEN instr(o.meta, '"uniq_key"') = 0 THEN NULL WHEN json_valid(o.meta) THEN json_extract(o.meta, '$.uniq_key') END) = e.key
        AND o.id <> e.id
        AND (CASE WHEN instr(o.meta, '"uniq_key"') = 0 THEN NULL WHEN json_valid(o.meta) THEN json_extract(o.meta, '$.uniq_key') END) IS NOT NULL
        AND instr(
          (CASE WHEN instr(o.meta, '"uniq_key"') = 0 THEN NULL WHEN json_valid(o.meta) THEN json_extract(o.meta, '$.uniq_bmp') END),
          CASE o.state
            WHEN 'scheduled' THEN '0' WHEN 'available' THEN '1' WHEN 'executing' THEN '2'
            WHEN 'retryable' THEN '3' WHEN 'completed' THEN '4' WHEN 'cancelled' THEN '5'
            WHEN 'discarded' THEN '6' WHEN 'suspended' THEN '7'
          END
        ) > 0
    )
    OR EXISTS (
      SELECT 1 FROM due AS f
      WHERE f.key = e.key AND (f.scheduled_at < e.scheduled_at
        OR (f.scheduled_at = e.scheduled_at AND f.id < e.id))
    )
)
RETURNING queue
