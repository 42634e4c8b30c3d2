-- sft: one row per rollout with reward >= min_reward: the golden path from the root to the last golden
-- node as one conversation, ending at its last assistant message (TRL SFT columns `messages`, `tools`).
-- Parameters: min_reward (1.0), run_id (every harvest run), drop_tool_errors (false; true = the
-- reference's filter: drop a path with any failed tool call).
CREATE OR REPLACE VIEW sft AS
WITH last_golden AS (
    SELECT rollout_id, arg_max(node_id, depth) AS node_id, arg_max(path, depth) AS path
    FROM nodes
    WHERE is_golden
    GROUP BY rollout_id
),
paths AS (
    SELECT d.rollout_id, d.run_id, d.task_id, d.reward, d.tools, g.path, t.messages,
           len(t.messages) + 1 - list_position(list_reverse(list_transform(t.messages, lambda m: m.role)), 'assistant')
               AS last_assistant
    FROM dataset_rollouts AS d
    JOIN last_golden AS g ON g.rollout_id = d.rollout_id
    JOIN trajectories AS t ON t.rollout_id = g.rollout_id AND t.node_id = g.node_id
)
SELECT
    rollout_id,                                   -- the rollout
    run_id,                                       -- its run
    task_id,                                      -- its task
    reward,                                       -- its reward
    list_slice(messages, 1, last_assistant) AS messages,  -- system, user, assistant (+ tool calls), tool ...
    tools                                         -- tool schemas as JSON text
FROM paths
WHERE last_assistant IS NOT NULL
  AND NOT (coalesce(getvariable('drop_tool_errors'), false) AND EXISTS (
      SELECT 1 FROM tool_calls AS c
      WHERE c.rollout_id = paths.rollout_id AND list_contains(paths.path, c.node_id) AND NOT c.ok))
