-- $1 schema name. The version comment on oban_jobs, or NULL.
SELECT obj_description(to_regclass(format('%I.oban_jobs', $1::text)), 'pg_class')
