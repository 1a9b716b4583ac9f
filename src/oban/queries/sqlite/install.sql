-- Creates the oban tables and indexes in this SQLite file. Idempotent (IF NOT EXISTS
-- everywhere); the engine runs the statements in one BEGIN IMMEDIATE transaction, so
-- concurrent installs from several processes take turns. {table_prefix} is '' for the
-- "public" prefix and '<prefix>_' otherwise; nothing else is substituted.
-- Timestamps are UTC text in one format, 'YYYY-MM-DD HH:MM:SS.SSS', so that text order is
-- time order. args/meta are JSON objects, errors/tags/attempted_by JSON arrays (as text).
CREATE TABLE IF NOT EXISTS {table_prefix}oban_jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  state TEXT NOT NULL DEFAULT 'available',
  queue TEXT NOT NULL DEFAULT 'default',
  worker TEXT NOT NULL,
  args TEXT NOT NULL DEFAULT '{}',
  errors TEXT NOT NULL DEFAULT '[]',
  attempt INTEGER NOT NULL DEFAULT 0,
  max_attempts INTEGER NOT NULL DEFAULT 20,
  inserted_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  scheduled_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  attempted_at TEXT,
  completed_at TEXT,
  attempted_by TEXT,
  discarded_at TEXT,
  priority INTEGER NOT NULL DEFAULT 0,
  tags TEXT NOT NULL DEFAULT '[]',
  meta TEXT NOT NULL DEFAULT '{}',
  cancelled_at TEXT,
  CONSTRAINT job_state CHECK (state IN (
    'available', 'suspended', 'scheduled', 'executing',
    'retryable', 'completed', 'discarded', 'cancelled'
  )),
  CONSTRAINT worker_length CHECK (length(worker) > 0 AND length(worker) < 128),
  CONSTRAINT queue_length CHECK (length(queue) > 0 AND length(queue) < 128),
  CONSTRAINT positive_max_attempts CHECK (max_attempts > 0),
  CONSTRAINT attempt_range CHECK (attempt >= 0 AND attempt <= max_attempts),
  CONSTRAINT non_negative_priority CHECK (priority >= 0)
);

-- Fetching: available jobs of one queue in priority, scheduled_at, id order.
CREATE INDEX IF NOT EXISTS {table_prefix}oban_jobs_state_queue_priority_scheduled_at_id_index
  ON {table_prefix}oban_jobs (state, queue, priority, scheduled_at, id);

-- Staging scans only scheduled/retryable rows; pruning scans only finished ones.
CREATE INDEX IF NOT EXISTS {table_prefix}oban_jobs_staging_index
  ON {table_prefix}oban_jobs (scheduled_at, id) WHERE state IN ('scheduled', 'retryable');
CREATE INDEX IF NOT EXISTS {table_prefix}oban_jobs_completed_at_index
  ON {table_prefix}oban_jobs (completed_at) WHERE state = 'completed';
CREATE INDEX IF NOT EXISTS {table_prefix}oban_jobs_cancelled_at_index
  ON {table_prefix}oban_jobs (cancelled_at) WHERE state = 'cancelled';
CREATE INDEX IF NOT EXISTS {table_prefix}oban_jobs_discarded_at_index
  ON {table_prefix}oban_jobs (discarded_at) WHERE state = 'discarded';

-- Cron de-duplication looks jobs up by (meta.cron_name, meta.cron_at).
CREATE INDEX IF NOT EXISTS {table_prefix}oban_jobs_cron_index
  ON {table_prefix}oban_jobs (json_extract(meta, '$.cron_name'), json_extract(meta, '$.cron_at'))
  WHERE json_extract(meta, '$.cron_name') IS NOT NULL;

-- Unique jobs (docs/unique.md): a job holds meta.uniq_key while its state's number is in
-- meta.uniq_bmp (its digits, in the JSON text of that list). A meta that is not JSON holds
-- no key and fails nothing.
CREATE UNIQUE INDEX IF NOT EXISTS {table_prefix}oban_jobs_unique_index
  ON {table_prefix}oban_jobs ((CASE WHEN instr(meta, '"uniq_key"') = 0 THEN NULL WHEN json_valid(meta) THEN json_extract(meta, '$.uniq_key') END))
  WHERE (CASE WHEN instr(meta, '"uniq_key"') = 0 THEN NULL WHEN json_valid(meta) THEN json_extract(meta, '$.uniq_key') END) IS NOT NULL
    AND instr(
      (CASE WHEN instr(meta, '"uniq_key"') = 0 THEN NULL WHEN json_valid(meta) THEN json_extract(meta, '$.uniq_bmp') END),
      CASE state
        WHEN 'scheduled' THEN '0' WHEN 'available' THEN '1' WHEN 'executing' THEN '2'
        WHEN 'retryable' THEN '3' WHEN 'completed' THEN '4' WHEN 'cancelled' THEN '5'
        WHEN 'discarded' THEN '6' WHEN 'suspended' THEN '7'
      END
    ) > 0;

-- Workflows (docs/workflows.md): a workflow's jobs by meta.workflow_id. Only jobs whose meta
-- names one are in it; a meta that is not JSON names none and fails nothing.
CREATE INDEX IF NOT EXISTS {table_prefix}oban_jobs_workflow_index
  ON {table_prefix}oban_jobs ((CASE WHEN instr(meta, '"workflow_id"') = 0 THEN NULL WHEN json_valid(meta) THEN json_extract(meta, '$.workflow_id') END))
  WHERE (CASE WHEN instr(meta, '"workflow_id"') = 0 THEN NULL WHEN json_valid(meta) THEN json_extract(meta, '$.workflow_id') END) IS NOT NULL;

CREATE TABLE IF NOT EXISTS {table_prefix}oban_leaders (
  name TEXT PRIMARY KEY NOT NULL DEFAULT 'Oban',
  node TEXT NOT NULL,
  elected_at TEXT NOT NULL,
  expires_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS {table_prefix}oban_producers (
  uuid TEXT PRIMARY KEY NOT NULL,
  name TEXT NOT NULL DEFAULT 'Oban',
  node TEXT NOT NULL,
  queue TEXT NOT NULL,
  meta TEXT NOT NULL DEFAULT '{}',
  started_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')),
  updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);

-- Signals (queue control, job cancellation, leader changes) between processes sharing the
-- file, which SQLite cannot NOTIFY: each sender appends rows, every node reads the rows after
-- the last id it saw about once a second, and rows older than a minute are deleted.
CREATE TABLE IF NOT EXISTS {table_prefix}oban_signals (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  channel TEXT NOT NULL,
  payload TEXT NOT NULL,
  origin TEXT NOT NULL,
  inserted_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
);
