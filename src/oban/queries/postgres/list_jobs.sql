-- oban.list_jobs: jobs newest first, filtered, one keyset page. Each filter is NULL when not
-- given. $1 states (an array literal: cast here, the planner estimates how many rows match
-- and uses the state index for a rare state), $2 queues, $3 workers (text[]), $4 tags (jobs having all), $5 args and
-- $6 meta (jsonb the column must contain), $7 search (an ILIKE pattern over the worker and
-- the args' text), $8 ids, $9 after (the last id of the previous page), $10 limit, $11 floor
-- (the lowest id a bounded scan examines).
-- Newest first along the primary key: no OFFSET, no count.
SELECT id, worker, queue, attempt, max_attempts, priority,
  args::text, meta::text, to_jsonb(errors)::text, tags, attempted_by,
  inserted_at, attempted_at, scheduled_at, state::text,
  cancelled_at, completed_at, discarded_at
FROM {prefix}.oban_jobs
WHERE ($1::{prefix}.oban_job_state[] IS NULL OR state = ANY($1::{prefix}.oban_job_state[]))
  AND ($2::text[] IS NULL OR queue = ANY($2::text[]))
  AND ($3::text[] IS NULL OR worker = ANY($3::text[]))
  AND ($4::text[] IS NULL OR tags @> $4::text[])
  AND ($5::jsonb IS NULL OR args @> $5::jsonb)
  AND ($6::jsonb IS NULL OR meta @> $6::jsonb)
  AND ($7::text IS NULL OR worker ILIKE $7::text OR args::text ILIKE $7::text)
  AND ($8::bigint[] IS NULL OR id = ANY($8::bigint[]))
  AND ($9::bigint IS NULL OR id < $9::bigint)
  AND ($11::bigint IS NULL OR id >= $11::bigint)
ORDER BY id DESC
LIMIT $10::integer
