-- oban.crons: the newest job of each cron entry (the latest meta.cron_at), if any is left.
-- $1 the entries' names (text[]). Each lookup goes through the meta index (meta @>, as the
-- cron insert's own de-duplication does) and sorts only that entry's jobs: ordered by
-- cron_at rather than by id, so that the planner never walks the primary key backwards in
-- search of an entry with no job.
SELECT j.id, j.worker, j.queue, j.attempt, j.max_attempts, j.priority,
  j.args::text, j.meta::text, to_jsonb(j.errors)::text, j.tags, j.attempted_by,
  j.inserted_at, j.attempted_at, j.scheduled_at, j.state::text,
  j.cancelled_at, j.completed_at, j.discarded_at
FROM unnest($1::text[]) AS c (name)
CROSS JOIN LATERAL (
  SELECT o.*
  FROM {prefix}.oban_jobs AS o
  WHERE o.meta @> jsonb_build_object('cron_name', c.name)
  ORDER BY o.meta->>'cron_at' DESC, o.id DESC
  LIMIT 1
) AS j
