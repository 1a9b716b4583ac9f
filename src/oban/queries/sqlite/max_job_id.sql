-- oban.list_jobs with a bounded scan: the largest job id, below :below when it is given (one
-- probe of the primary key).
SELECT max(id) FROM {table_prefix}oban_jobs WHERE id <= coalesce(:below - 1, 9223372036854775807)
