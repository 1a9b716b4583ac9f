-- :limit, :after (a job id). For the sweeper: the next :limit suspended jobs after job :after,
-- in id order, with their workflow ids (NULL where meta.workflow_id is not text); the sweeper
-- goes on from the last id on its next tick and starts over at the end (postgres' twin says
-- why).
SELECT (CASE WHEN instr(meta, '"workflow_id"') = 0 THEN NULL
             WHEN json_valid(meta) AND json_type(meta, '$.workflow_id') = 'text'
               THEN json_extract(meta, '$.workflow_id') END) AS wid,
       id
FROM {table_prefix}oban_jobs
WHERE state = 'suspended' AND id > :after
ORDER BY id
LIMIT :limit
