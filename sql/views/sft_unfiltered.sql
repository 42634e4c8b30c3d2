-- sft_unfiltered: one row per rollout with reward >= min_reward: the conversation along its deepest branch
-- (at beam 1 the only branch), golden or not, ending at its last assistant message (TRL SFT columns).
-- The control of `factory loop`: the same SFT steps on a model's own rollouts without JOSH's selection.
-- Parameters: min_reward (1.0; the loop passes 0), run_id (every harvest run).
CREATE OR REPLACE VIEW sft_unfiltered AS
WITH deepest AS (
    SELECT rollout_id, arg_max(node_id, depth) AS node_id
    FROM nodes
    GROUP BY rollout_id
),
paths AS (
    SELECT d.rollout_id, d.run_id, d.task_id, d.reward, d.tools, t.messages,
           len(t.messages) + 1 - list_position(list_reverse(list_transform(t.messages, lambda m: m.role)), 'assistant')
               AS last_assistant
    FROM dataset_rollouts AS d
    JOIN deepest AS g ON g.rollout_id = d.rollout_id
    JOIN trajectories AS t ON t.rollout_id = g.rollout_id AND t.node_id = g.node_id
)
SELECT
    rollout_id,                                   -- the rollout
    run_id,                                       -- its run
    task_id,                                      -- its task
    reward,                                       -- its reward (any, down to min_reward)
    list_slice(messages, 1, last_assistant) AS messages,  -- system, user, assistant (+ tool calls), tool ...
    tools                                         -- tool schemas as JSON text
FROM paths
WHERE last_assistant IS NOT NULL
