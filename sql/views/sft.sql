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
)
SELECT
    p.rollout_id,                                 -- the rollout
    p.run_id,                                     -- its run
    p.task_id,                                    -- its task
    p.reward,                                     -- its reward
    p.messages,                                   -- system, user, assistant (+ tool calls), tool ...
    p.tools                                       -- tool schemas as JSON text
FROM path_conversations AS p
JOIN last_golden AS g ON g.rollout_id = p.rollout_id AND g.node_id = p.node_id
WHERE p.messages IS NOT NULL
  AND NOT (coalesce(getvariable('drop_tool_errors'), false) AND EXISTS (
      SELECT 1 FROM tool_calls AS c
      WHERE c.rollout_id = p.rollout_id AND list_contains(g.path, c.node_id) AND NOT c.ok))
