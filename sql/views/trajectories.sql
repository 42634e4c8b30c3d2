-- trajectories: one row per node: the whole conversation from the root to that node (ancestors' messages,
-- then the node's own), with the node's labels. Prefixes are stored once; this view concatenates them.
CREATE OR REPLACE VIEW trajectories AS
SELECT
    n.rollout_id,                                        -- the rollout
    o.run_id,                                            -- the run
    o.task_id,                                           -- the task
    n.node_id,                                           -- the last node of the path
    n.depth,                                             -- its depth (root = 0)
    n.is_golden,                                         -- on the path the tree collapsed onto
    n.is_successful,                                     -- on the path of some rewarded leaf
    n.end_reason,                                        -- why the branch ended (NULL if it continued)
    list(c.message ORDER BY p.depth, c.pos) AS messages  -- the conversation, root first
FROM nodes AS n
JOIN rollouts AS o ON o.rollout_id = n.rollout_id
JOIN nodes AS p ON p.rollout_id = n.rollout_id AND list_contains(n.path, p.node_id)
JOIN chat_messages AS c ON c.rollout_id = p.rollout_id AND c.node_id = p.node_id
GROUP BY n.rollout_id, o.run_id, o.task_id, n.node_id, n.depth, n.is_golden, n.is_successful, n.end_reason
