-- oban.list_jobs with a bounded scan: the largest job id, below $1 when it is given (one probe
-- of the primary key, backwards; coalesce keeps the bound an index condition in a generic plan,
-- and <= keeps the largest possible id findable).
SELECT max(id) FROM {prefix}.oban_jobs WHERE id <= COALESCE($1::bigint - 1, 9223372036854775807)
