-- state_changes: every write of one rollout (rollout_id, node_id, pos, tbl, key, before, after) in node and call order, as the warehouse stores them
SELECT rollout_id, node_id, pos, tbl, key, before, after
FROM taubench_writes
WHERE rollout_id = $rollout_id
ORDER BY node_id, pos, tbl, key
