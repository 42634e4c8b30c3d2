-- read_write: the latest write of one row on a branch's path (deepest node, then last call; positions below 1e6): n = how many writes of the path hold it (0: the base row holds), doc = the last version (NULL = deleted)
SELECT count(*) AS n, arg_max_null(after, list_position($path, node_id)::BIGINT * 1000000 + pos) AS doc
FROM taubench_writes
WHERE rollout_id = $rollout_id AND tbl = $tbl AND key = $key AND list_contains($path, node_id)
