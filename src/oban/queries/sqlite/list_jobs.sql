-- oban.list_jobs: jobs newest first, filtered, one keyset page. Each filter is NULL when not
-- given. :states, :queues, :workers, :tags, :ids (JSON arrays), :args, :meta (JSON the column
-- must contain, as PostgreSQL's @> decides: oban_json_contains, registered by the engine),
-- :search (a LIKE pattern over the worker and the args' text, escaped with \; LIKE ignores
-- the case of ASCII letters only, so a search with other letters, :fold, compares casefolded
-- text with oban_icontains and :needle), :after (the last id of the previous page), :floor (the
-- lowest id a bounded scan examines), :limit. Newest first along the primary key: no OFFSET.
-- Text columns are read as BLOBs, as in get_jobs.sql.
SELECT id, CAST(worker AS BLOB), CAST(queue AS BLOB), attempt, max_attempts, priority,
  CAST(args AS BLOB), CAST(meta AS BLOB), CAST(errors AS BLOB), CAST(tags AS BLOB),
  CAST(attempted_by AS BLOB), CAST(inserted_at AS BLOB), CAST(attempted_at AS BLOB),
  CAST(scheduled_at AS BLOB), CAST(state AS BLOB), CAST(cancelled_at AS BLOB),
  CAST(completed_at AS BLOB), CAST(discarded_at AS BLOB)
FROM {table_prefix}oban_jobs
WHERE (:states IS NULL OR state IN (SELECT value FROM json_each(:states)))
  AND (:queues IS NULL OR queue IN (SELECT value FROM json_each(:queues)))
  AND (:workers IS NULL OR worker IN (SELECT value FROM json_each(:workers)))
  AND (:tags IS NULL OR oban_json_contains(CAST(tags AS BLOB), :tags))
  AND (:args IS NULL OR oban_json_contains(CAST(args AS BLOB), :args))
  AND (:meta IS NULL OR oban_json_contains(CAST(meta AS BLOB), :meta))
  AND (:search IS NULL OR CASE
    WHEN :fold THEN oban_icontains(CAST(worker AS BLOB), :needle)
      OR oban_icontains(CAST(args AS BLOB), :needle)
    ELSE worker LIKE :search ESCAPE '\' OR args LIKE :search ESCAPE '\'
  END)
  AND (:ids IS NULL OR id IN (SELECT value FROM json_each(:ids)))
  -- (coalesce, not ":after IS NULL OR": so that SQLite seeks along the primary key; <= so
  -- that the largest possible id is listed too)
  AND id <= coalesce(:after - 1, 9223372036854775807)
  AND id >= coalesce(:floor, 0)
ORDER BY id DESC
LIMIT :limit
