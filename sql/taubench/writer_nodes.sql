-- writer_nodes: the nodes of one rollout that have written
SELECT DISTINCT node_id FROM taubench_writes WHERE rollout_id = $rollout_id
