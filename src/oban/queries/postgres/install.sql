-- Installs or upgrades the oban schema in {prefix} to Elixir Oban's migration version 14,
-- plus the Python-only objects. Idempotent; runs in one transaction. {prefix} is replaced by
-- the quoted schema name and {prefix_name} by its literal; nothing else is substituted.

-- Concurrent installs (several nodes starting at once) take turns.
SELECT pg_advisory_xact_lock(hashtext('oban_install'), hashtext({prefix_name}));

CREATE SCHEMA IF NOT EXISTS {prefix};

DO $install$
DECLARE
  has_jobs boolean;
  version text;
  labels text[];
BEGIN
  SELECT EXISTS (
    SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = {prefix_name} AND c.relname = 'oban_jobs' AND c.relkind IN ('r', 'p')
  ) INTO has_jobs;

  IF has_jobs THEN
    version := obj_description(format('%I.oban_jobs', {prefix_name})::regclass, 'pg_class');
  END IF;

  IF version IS NOT NULL THEN
    IF version = '∞' OR (version ~ '^[0-9]+$' AND version::bigint >= 14) THEN
      RETURN; -- Elixir's objects are at 14 or later: never touch them, never lower the number.
    ELSIF version ~ '^[0-9]+$' THEN
      RAISE EXCEPTION 'oban_jobs in schema % is at Elixir Oban migration version %; '
        'run Elixir Oban''s migrations up to version 14 first, then run oban install again',
        {prefix_name}, version;
    ELSE
      RAISE EXCEPTION 'oban_jobs in schema % has the comment %, which is not an Oban '
        'migration version; remove the comment or fix it before running oban install',
        {prefix_name}, quote_literal(version);
    END IF;
  END IF;

  SELECT array_agg(e.enumlabel::text ORDER BY e.enumsortorder) INTO labels
  FROM pg_type t
  JOIN pg_namespace n ON n.oid = t.typnamespace
  JOIN pg_enum e ON e.enumtypid = t.oid
  WHERE n.nspname = {prefix_name} AND t.typname = 'oban_job_state';

  IF labels IS NULL THEN
    CREATE TYPE {prefix}.oban_job_state AS ENUM (
      'available', 'suspended', 'scheduled', 'executing',
      'retryable', 'completed', 'discarded', 'cancelled'
    );
  END IF;

  IF NOT has_jobs THEN
    CREATE TABLE {prefix}.oban_jobs (
      id bigserial PRIMARY KEY,
      state {prefix}.oban_job_state NOT NULL DEFAULT 'available',
      queue text NOT NULL DEFAULT 'default',
      worker text NOT NULL,
      args jsonb NOT NULL DEFAULT '{}',
      errors jsonb[] NOT NULL DEFAULT ARRAY[]::jsonb[],
      attempt integer NOT NULL DEFAULT 0,
      max_attempts integer NOT NULL DEFAULT 20,
      inserted_at timestamp NOT NULL DEFAULT timezone('UTC', now()),
      scheduled_at timestamp NOT NULL DEFAULT timezone('UTC', now()),
      attempted_at timestamp,
      completed_at timestamp,
      attempted_by text[],
      discarded_at timestamp,
      priority integer NOT NULL DEFAULT 0,
      tags text[] DEFAULT ARRAY[]::text[],
      meta jsonb DEFAULT '{}',
      cancelled_at timestamp,
      CONSTRAINT worker_length CHECK (char_length(worker) > 0 AND char_length(worker) < 128),
      CONSTRAINT queue_length CHECK (char_length(queue) > 0 AND char_length(queue) < 128),
      CONSTRAINT positive_max_attempts CHECK (max_attempts > 0),
      CONSTRAINT attempt_range CHECK (attempt >= 0 AND attempt <= max_attempts)
    );
    ALTER TABLE {prefix}.oban_jobs
      ADD CONSTRAINT non_negative_priority CHECK (priority >= 0) NOT VALID;
  ELSE
    -- A schema left by oban-py 0.7.0 (no version comment): bring it to V14 in place.
    IF labels IS NOT NULL AND labels IS DISTINCT FROM ARRAY[
      'available', 'suspended', 'scheduled', 'executing',
      'retryable', 'completed', 'discarded', 'cancelled'
    ] THEN
      -- Enum values cannot be reordered: build the type anew and move the column over.
      -- Partial indexes whose predicates name old values are dropped first and rebuilt below.
      DROP INDEX IF EXISTS {prefix}.oban_jobs_staging_index;
      DROP INDEX IF EXISTS {prefix}.oban_jobs_completed_at_index;
      DROP INDEX IF EXISTS {prefix}.oban_jobs_cancelled_at_index;
      DROP INDEX IF EXISTS {prefix}.oban_jobs_discarded_at_index;
      ALTER TYPE {prefix}.oban_job_state RENAME TO oban_job_state_pre14;
      CREATE TYPE {prefix}.oban_job_state AS ENUM (
        'available', 'suspended', 'scheduled', 'executing',
        'retryable', 'completed', 'discarded', 'cancelled'
      );
      ALTER TABLE {prefix}.oban_jobs ALTER COLUMN state DROP DEFAULT;
      ALTER TABLE {prefix}.oban_jobs ALTER COLUMN state TYPE {prefix}.oban_job_state
        USING state::text::{prefix}.oban_job_state;
      ALTER TABLE {prefix}.oban_jobs ALTER COLUMN state SET DEFAULT 'available';
      DROP TYPE {prefix}.oban_job_state_pre14;
    END IF;

    IF EXISTS (
      SELECT 1 FROM information_schema.columns
      WHERE table_schema = {prefix_name} AND table_name = 'oban_jobs'
        AND column_name = 'errors' AND data_type = 'jsonb'
    ) THEN
      ALTER TABLE {prefix}.oban_jobs ADD COLUMN errors_v14 jsonb[] NOT NULL DEFAULT ARRAY[]::jsonb[];
      UPDATE {prefix}.oban_jobs
        SET errors_v14 = ARRAY(SELECT jsonb_array_elements(errors))
        WHERE jsonb_typeof(errors) = 'array' AND jsonb_array_length(errors) > 0;
      ALTER TABLE {prefix}.oban_jobs DROP COLUMN errors;
      ALTER TABLE {prefix}.oban_jobs RENAME COLUMN errors_v14 TO errors;
    END IF;

    ALTER TABLE {prefix}.oban_jobs
      ALTER COLUMN attempt TYPE integer,
      ALTER COLUMN max_attempts TYPE integer,
      ALTER COLUMN priority TYPE integer,
      ALTER COLUMN meta DROP NOT NULL,
      ALTER COLUMN meta SET DEFAULT '{}',
      ALTER COLUMN tags DROP NOT NULL,
      ALTER COLUMN tags SET DEFAULT ARRAY[]::text[],
      ALTER COLUMN attempted_by DROP NOT NULL,
      ALTER COLUMN attempted_by DROP DEFAULT;

    IF EXISTS (
      SELECT 1 FROM information_schema.columns
      WHERE table_schema = {prefix_name} AND table_name = 'oban_jobs'
        AND column_name = 'id' AND identity_generation = 'ALWAYS'
    ) THEN
      ALTER TABLE {prefix}.oban_jobs ALTER COLUMN id SET GENERATED BY DEFAULT;
    END IF;

    ALTER TABLE {prefix}.oban_jobs DROP CONSTRAINT IF EXISTS worker_length;
    ALTER TABLE {prefix}.oban_jobs DROP CONSTRAINT IF EXISTS queue_length;
    ALTER TABLE {prefix}.oban_jobs DROP CONSTRAINT IF EXISTS positive_max_attempts;
    ALTER TABLE {prefix}.oban_jobs DROP CONSTRAINT IF EXISTS attempt_range;
    ALTER TABLE {prefix}.oban_jobs DROP CONSTRAINT IF EXISTS non_negative_priority;
    ALTER TABLE {prefix}.oban_jobs
      ADD CONSTRAINT worker_length CHECK (char_length(worker) > 0 AND char_length(worker) < 128),
      ADD CONSTRAINT queue_length CHECK (char_length(queue) > 0 AND char_length(queue) < 128),
      ADD CONSTRAINT positive_max_attempts CHECK (max_attempts > 0),
      ADD CONSTRAINT attempt_range CHECK (attempt >= 0 AND attempt <= max_attempts);
    ALTER TABLE {prefix}.oban_jobs
      ADD CONSTRAINT non_negative_priority CHECK (priority >= 0) NOT VALID;

    IF EXISTS (
      SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = {prefix_name}
        AND c.relname = 'oban_jobs_state_queue_priority_scheduled_at_id_index'
    ) THEN
      ALTER INDEX {prefix}.oban_jobs_state_queue_priority_scheduled_at_id_index RESET (fillfactor);
    END IF;
  END IF;

  CREATE INDEX IF NOT EXISTS oban_jobs_state_queue_priority_scheduled_at_id_index
    ON {prefix}.oban_jobs (state, queue, priority, scheduled_at, id);
  CREATE INDEX IF NOT EXISTS oban_jobs_args_index ON {prefix}.oban_jobs USING gin (args);
  CREATE INDEX IF NOT EXISTS oban_jobs_meta_index ON {prefix}.oban_jobs USING gin (meta);
  CREATE INDEX IF NOT EXISTS oban_jobs_state_cancelled_at_index
    ON {prefix}.oban_jobs (state, cancelled_at);
  CREATE INDEX IF NOT EXISTS oban_jobs_state_discarded_at_index
    ON {prefix}.oban_jobs (state, discarded_at);

  CREATE UNLOGGED TABLE IF NOT EXISTS {prefix}.oban_peers (
    name text NOT NULL,
    node text NOT NULL,
    started_at timestamp NOT NULL,
    expires_at timestamp NOT NULL,
    CONSTRAINT oban_peers_pkey PRIMARY KEY (name)
  );

  EXECUTE format('COMMENT ON TABLE %I.oban_jobs IS %L', {prefix_name}, '14');
END
$install$;

-- Python-only objects; Elixir ignores them.

CREATE UNLOGGED TABLE IF NOT EXISTS {prefix}.oban_leaders (
  name text PRIMARY KEY DEFAULT 'Oban',
  node text NOT NULL,
  elected_at timestamp NOT NULL,
  expires_at timestamp NOT NULL
);

CREATE UNLOGGED TABLE IF NOT EXISTS {prefix}.oban_producers (
  uuid uuid PRIMARY KEY,
  name text NOT NULL DEFAULT 'Oban',
  node text NOT NULL,
  queue text NOT NULL,
  meta jsonb NOT NULL DEFAULT '{}',
  started_at timestamp NOT NULL DEFAULT timezone('UTC', now()),
  updated_at timestamp NOT NULL DEFAULT timezone('UTC', now())
);

-- Staging scans only due scheduled/retryable rows; pruning scans only finished ones.
CREATE INDEX IF NOT EXISTS oban_jobs_staging_index
  ON {prefix}.oban_jobs (scheduled_at, id) WHERE state IN ('scheduled', 'retryable');
CREATE INDEX IF NOT EXISTS oban_jobs_completed_at_index
  ON {prefix}.oban_jobs (completed_at) WHERE state = 'completed';
CREATE INDEX IF NOT EXISTS oban_jobs_cancelled_at_index
  ON {prefix}.oban_jobs (cancelled_at) WHERE state = 'cancelled';
CREATE INDEX IF NOT EXISTS oban_jobs_discarded_at_index
  ON {prefix}.oban_jobs (discarded_at) WHERE state = 'discarded';

DO $estimate$
BEGIN
  -- Oban Met may have created its own copy; keep it.
  IF NOT EXISTS (
    SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = {prefix_name} AND p.proname = 'oban_count_estimate'
  ) THEN
    CREATE FUNCTION {prefix}.oban_count_estimate(state text, queue text)
    RETURNS integer AS $body$
    DECLARE
      plan jsonb;
    BEGIN
      EXECUTE format(
        'EXPLAIN (FORMAT JSON) SELECT id FROM %I.oban_jobs WHERE state = %L::%I.oban_job_state AND queue = %L',
        {prefix_name}, state, {prefix_name}, queue
      ) INTO plan;
      RETURN (plan->0->'Plan'->>'Plan Rows')::integer;
    END;
    $body$ LANGUAGE plpgsql;
  END IF;
END
$estimate$;

-- Unique jobs (docs/unique.md): a job holds meta.uniq_key while its state is in meta.uniq_bmp.
-- The state's number, as jsonb so that the index condition is `uniq_bmp @> number`.
CREATE OR REPLACE FUNCTION {prefix}.oban_uniq_state_bit(state {prefix}.oban_job_state)
RETURNS jsonb AS $body$
  SELECT CASE state
    WHEN 'scheduled' THEN jsonb '0'
    WHEN 'available' THEN jsonb '1'
    WHEN 'executing' THEN jsonb '2'
    WHEN 'retryable' THEN jsonb '3'
    WHEN 'completed' THEN jsonb '4'
    WHEN 'cancelled' THEN jsonb '5'
    WHEN 'discarded' THEN jsonb '6'
    WHEN 'suspended' THEN jsonb '7'
  END
$body$ LANGUAGE sql IMMUTABLE PARALLEL SAFE;

-- The index that makes keys unique. A row without a key fails its condition at the first test
-- (this runs for every write to oban_jobs). Built here only on an empty table (a new installation);
-- on a table with rows `oban install` builds it afterwards with CREATE INDEX CONCURRENTLY,
-- once it has checked for duplicates (oban.schema.unique_index_sql). An index of that name
-- made by someone else (Oban Pro) is kept.
DO $unique$
BEGIN
  IF to_regclass(format('%I.oban_jobs_unique_index', {prefix_name})) IS NULL
     AND NOT EXISTS (SELECT 1 FROM {prefix}.oban_jobs LIMIT 1) THEN
    CREATE UNIQUE INDEX oban_jobs_unique_index ON {prefix}.oban_jobs ((meta->>'uniq_key'))
      WHERE meta ? 'uniq_key' AND meta->'uniq_bmp' @> {prefix}.oban_uniq_state_bit(state);
  END IF;
END
$unique$;
