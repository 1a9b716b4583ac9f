-- $1 channel, $2 payloads
SELECT pg_notify($1::text, payload) FROM unnest($2::text[]) AS payload
