-- toolwoz_key_rows: the toolwoz_keys entries a batch of `fixed` row lookups asks for: each key's rows (DB order)
-- and their train times. Parameter $keys: the keys' text (toolwoz/query.py `index_key`); keys without rows are absent.
SELECT key, row_ids, leave_mins, arrive_mins
FROM toolwoz_keys
WHERE key_hash IN (SELECT md5_number(unnest($keys)))
