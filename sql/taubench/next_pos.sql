-- next_pos: the call position after the last one that wrote at one node of a rollout (0 when it wrote nothing yet)
SELECT coalesce(max(pos) + 1, 0) AS pos FROM taubench_writes WHERE rollout_id = $rollout_id AND node_id = $node_id
