-- Up to 5 keys that more than one job holds: the unique index cannot be built until they are
-- resolved.
SELECT meta->>'uniq_key', count(*), array_agg(id ORDER BY id)
FROM {prefix}.oban_jobs
WHERE meta ? 'uniq_key' AND meta->'uniq_bmp' @> {prefix}.oban_uniq_state_bit(state)
GROUP BY 1
HAVING count(*) > 1
LIMIT 5
