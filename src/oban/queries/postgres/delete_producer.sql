-- $1 uuid
DELETE FROM {prefix}.oban_producers WHERE uuid = $1::uuid
