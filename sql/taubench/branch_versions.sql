-- branch_versions: every row one branch (`rollout`, `node_path`) wrote, with the hash of its latest version (`final`: deepest node, then last call; NULL = deleted) and of the version before its first write (`base`: the base row's, NULL = created)
CREATE OR REPLACE TEMP MACRO branch_versions(rollout, node_path) AS TABLE
SELECT tbl, key,
       arg_max_null(after_hash, {'depth': list_position(node_path, node_id), 'pos': pos}) AS final,
       arg_min_null(before_hash, {'depth': list_position(node_path, node_id), 'pos': pos}) AS base
FROM taubench_writes
WHERE rollout_id = rollout AND list_contains(node_path, node_id)
GROUP BY tbl, key
