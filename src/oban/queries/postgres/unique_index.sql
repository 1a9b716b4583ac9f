-- Builds the unique-jobs index without blocking writes. Run it outside a transaction.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS oban_jobs_unique_index
  ON {prefix}.oban_jobs ((meta->>'uniq_key'))
  WHERE meta ? 'uniq_key' AND meta->'uniq_bmp' @> {prefix}.oban_uniq_state_bit(state)
