-- $1 limit, $2 after (a job id). For the sweeper that releases what a node's crash between an
-- ack and its release check left waiting: the next $1 suspended jobs after job $2, in id
-- order, with their workflow ids (NULL where meta.workflow_id is not a string). The sweeper
-- goes on from the last id on its next tick and starts over at the end, so one workflow with
-- many suspended jobs never hides the others. The ids come from the state index alone.
SELECT CASE WHEN jsonb_typeof(j.meta->'workflow_id') = 'string' THEN j.meta->>'workflow_id' END,
       j.id
FROM (
  SELECT id FROM {prefix}.oban_jobs
  WHERE state = 'suspended' AND id > $2::bigint
  ORDER BY id
  LIMIT $1::integer
) AS s
JOIN {prefix}.oban_jobs AS j ON j.id = s.id
ORDER BY j.id
