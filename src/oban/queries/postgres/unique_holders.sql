-- $1: keys. The rows that hold them: their state is in their own uniq_bmp. The condition is
-- the one of oban_jobs_unique_index, so the index answers it. A new statement, so it sees a
-- holder that committed while the insert before it waited.
SELECT meta->>'uniq_key', id, state::text, queue, inserted_at, scheduled_at
FROM {prefix}.oban_jobs
WHERE meta->>'uniq_key' = ANY($1::text[])
  AND meta ? 'uniq_key' AND meta->'uniq_bmp' @> {prefix}.oban_uniq_state_bit(state)
