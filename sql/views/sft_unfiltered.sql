-- sft_unfiltered: one row per rollout with reward >= min_reward: the conversation along its deepest branch
-- (at beam 1 the only branch), golden or not, ending at its last assistant message (TRL SFT columns).
-- The control of `factory loop`: the same SFT steps on a model's own rollouts without JOSH's selection.
-- Parameters: min_reward (1.0; the loop passes 0), run_id (every harvest run).
CREATE OR REPLACE VIEW sft_unfiltered AS
WITH deepest AS (
    SELECT rollout_id, arg_max(node_id, depth) AS node_id
    FROM nodes
    GROUP BY rollout_id
)
SELECT
    p.rollout_id,                                 -- the rollout
    p.run_id,                                     -- its run
    p.task_id,                                    -- its task
    p.reward,                                     -- its reward (any, down to min_reward)
    p.messages,                                   -- system, user, assistant (+ tool calls), tool ...
    p.tools                                       -- tool schemas as JSON text
FROM path_conversations AS p
JOIN deepest AS g ON g.rollout_id = p.rollout_id AND g.node_id = p.node_id
WHERE p.messages IS NOT NULL
