-- 02_branch_divergence: Where do branches diverge? Per harvest run and agent turn (depth of the children): the
-- forks (a node with several children), those whose children took different turns (assistant and tool messages),
-- and the decisive ones: a golden child beside a sibling on no rewarded path that took another turn (a DPO pair).
WITH turns AS (
    SELECT rollout_id, node_id, md5(to_json(list(message ORDER BY pos))::VARCHAR) AS turn
    FROM chat_messages
    WHERE role IN ('assistant', 'tool')
    GROUP BY rollout_id, node_id
),
children AS (
    SELECT c.rollout_id, c.parent_id, c.depth, c.is_successful, t.turn,
           max(t.turn) FILTER (c.is_golden) OVER (PARTITION BY c.rollout_id, c.parent_id) AS golden_turn
    FROM nodes AS c
    LEFT JOIN turns AS t ON t.rollout_id = c.rollout_id AND t.node_id = c.node_id
    WHERE c.parent_id IS NOT NULL
),
forks AS (
    SELECT rollout_id, parent_id, any_value(depth) AS depth, count(*) AS children,
           count(DISTINCT turn) > 1 AS diverged,
           bool_or(NOT is_successful AND turn IS DISTINCT FROM golden_turn AND golden_turn IS NOT NULL) AS decisive
    FROM children
    GROUP BY rollout_id, parent_id
    HAVING count(*) > 1
)
SELECT
    regexp_extract(r.agent_model, '[^/]+$') AS agent,         -- teacher, or the model folder's name
    f.depth AS turn,                                          -- the agent turn the siblings took (1 = first)
    count(*) AS forks,                                        -- nodes with several children
    sum(f.children)::INTEGER AS children,                     -- their children
    count(*) FILTER (f.diverged) AS diverged,                 -- children whose turns differ
    count(*) FILTER (f.decisive) AS decisive                  -- golden child vs. a failed, different sibling
FROM forks AS f
JOIN rollouts AS o ON o.rollout_id = f.rollout_id
JOIN runs AS r ON r.run_id = o.run_id
WHERE r.kind = 'harvest'
GROUP BY r.run_id, r.agent_model, r.created_at, f.depth
ORDER BY r.created_at, turn
