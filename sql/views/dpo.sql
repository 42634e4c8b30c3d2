-- dpo: one row per (divergence point, failed sibling): the shared prompt (the conversation up to the
-- divergence), the golden child's turn as `chosen` and a sibling's turn that is neither golden nor
-- successful as `rejected` (TRL columns prompt, chosen, rejected, tools). A turn is the child's agent
-- messages (assistant and tool), without the user reply that followed. A sibling whose turn equals the golden
-- one (they parted later) is no preference and is left out. Parameters: as dataset_rollouts.
CREATE OR REPLACE VIEW dpo AS
WITH turns AS (
    SELECT c.rollout_id, c.node_id, list(c.message ORDER BY c.pos) AS messages
    FROM chat_messages AS c
    WHERE c.role IN ('assistant', 'tool')
    GROUP BY c.rollout_id, c.node_id
),
pairs AS (
    SELECT g.rollout_id, g.parent_id, g.node_id AS chosen_id, b.node_id AS rejected_id
    FROM nodes AS g
    JOIN nodes AS b ON b.rollout_id = g.rollout_id AND b.parent_id = g.parent_id AND b.node_id <> g.node_id
    JOIN dataset_rollouts AS d ON d.rollout_id = g.rollout_id
    WHERE g.is_golden AND NOT b.is_golden AND NOT b.is_successful
)
SELECT
    p.rollout_id,                      -- the rollout
    d.run_id,                          -- its run
    p.parent_id AS divergence_node,    -- the node whose children diverge
    t.messages AS prompt,              -- conversation up to the divergence (ends with the user's message)
    ct.messages AS chosen,             -- the golden child's turn
    rt.messages AS rejected,           -- a failed sibling's turn
    d.tools                            -- tool schemas as JSON text
FROM pairs AS p
JOIN dataset_rollouts AS d ON d.rollout_id = p.rollout_id
JOIN trajectories AS t ON t.rollout_id = p.rollout_id AND t.node_id = p.parent_id
JOIN turns AS ct ON ct.rollout_id = p.rollout_id AND ct.node_id = p.chosen_id
JOIN turns AS rt ON rt.rollout_id = p.rollout_id AND rt.node_id = p.rejected_id
WHERE ct.messages IS DISTINCT FROM rt.messages
