-- show_nodes: one row per node of one rollout's JOSH tree, with its tool calls and the goals it matched.
-- Columns: node_id, parent_id, depth, step, seed, ended, end_reason, is_successful, is_golden, error,
-- tool_calls (list of {name, ok, error_kind, n_rows} in call order), rewards (list of {goal, credited}).
-- Parameter $rollout_id.
SELECT
    n.node_id,                                                             -- the node
    n.parent_id,                                                           -- its parent (NULL: the root)
    n.depth,                                                               -- depth (root = 0)
    n.created_step AS step,                                                -- JOSH step that created it
    n.seed,                                                                -- its branch seed
    n.ended,                                                               -- did the branch end here
    n.end_reason,                                                          -- why (pruned, user_ended, ...)
    n.is_successful,                                                       -- on the path of a rewarded leaf
    n.is_golden,                                                           -- on the path the tree collapsed onto
    n.error,                                                               -- a branch error
    (SELECT list({'name': c.name, 'ok': c.ok, 'error_kind': c.error_kind, 'n_rows': c.n_rows} ORDER BY c.pos)
     FROM tool_calls AS c WHERE c.rollout_id = n.rollout_id AND c.node_id = n.node_id) AS tool_calls,  -- its calls
    (SELECT list({'goal': w.goal, 'credited': w.credited} ORDER BY w.goal)
     FROM rewards AS w WHERE w.rollout_id = n.rollout_id AND w.node_id = n.node_id) AS rewards  -- goals matched
FROM nodes AS n
WHERE n.rollout_id = $rollout_id
ORDER BY n.node_id
