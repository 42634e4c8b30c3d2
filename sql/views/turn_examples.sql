-- turn_examples: one row per assistant message of the dataset rollouts: the conversation before it
-- (prompt), the message (completion) and its node's labels. The base of the kto view.
CREATE OR REPLACE VIEW turn_examples AS
WITH ancestors AS (
    SELECT n.rollout_id, n.node_id, n.is_golden, n.is_successful,
           list(c.message ORDER BY p.depth, c.pos) FILTER (p.node_id <> n.node_id) AS before
    FROM nodes AS n
    JOIN dataset_rollouts AS d ON d.rollout_id = n.rollout_id
    JOIN nodes AS p ON p.rollout_id = n.rollout_id AND list_contains(n.path, p.node_id)
    JOIN chat_messages AS c ON c.rollout_id = p.rollout_id AND c.node_id = p.node_id
    GROUP BY n.rollout_id, n.node_id, n.is_golden, n.is_successful
),
own AS (
    SELECT rollout_id, node_id, list(message ORDER BY pos) AS messages
    FROM chat_messages
    GROUP BY rollout_id, node_id
)
SELECT
    a.rollout_id,                                                       -- the rollout
    a.node_id,                                                          -- the node holding the message
    c.pos,                                                              -- its position in the node
    a.is_golden,                                                        -- node on the golden path
    a.is_successful,                                                    -- node on a rewarded path
    list_concat(coalesce(a.before, []), list_slice(o.messages, 1, c.pos)) AS prompt,  -- everything before it
    [c.message] AS completion                                           -- the assistant message
FROM ancestors AS a
JOIN own AS o ON o.rollout_id = a.rollout_id AND o.node_id = a.node_id
JOIN chat_messages AS c ON c.rollout_id = a.rollout_id AND c.node_id = a.node_id AND c.role = 'assistant'
