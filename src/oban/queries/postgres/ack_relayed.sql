-- The CTE relayed of the ack statements (after acked, see ack_jobs.sql and fetch_jobs.sql):
-- one NOTIFY on the relay channel ($channel) per 300 written acks of jobs enqueued with relay
-- (meta.relay), ids only, as plain JSON (under 8,000 bytes), delivered when the acks commit:
-- a waiter in another process hears of them with no statement after the ack.
SELECT pg_notify($channel::text, json_build_object('ids', array_agg(id ORDER BY id))::text)
FROM (
  SELECT id, (row_number() OVER (ORDER BY id) - 1) / 300 AS part FROM acked WHERE relay
) AS r
GROUP BY part
