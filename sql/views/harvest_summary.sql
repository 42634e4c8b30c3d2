-- harvest_summary: one row per harvest run: metrics (shared definition in run_scores), tree sizes, tokens,
-- tool error rate and how many training rows it yields at the default thresholds.
CREATE OR REPLACE VIEW harvest_summary AS
WITH nodes_per_run AS (
    SELECT o.run_id, count(*) AS nodes, count(*) FILTER (n.end_reason = 'pruned') AS pruned,
           count(*) FILTER (n.is_golden) AS golden
    FROM nodes AS n JOIN rollouts AS o ON o.rollout_id = n.rollout_id
    GROUP BY o.run_id
),
tokens_per_run AS (
    SELECT run_id, sum(completion_tokens) AS completion_tokens, sum(prompt_tokens) AS prompt_tokens
    FROM rollouts GROUP BY run_id
)
SELECT
    r.run_id,                                                   -- the harvest run
    r.env,                                                      -- toolwoz | retail | airline
    r.agent_model,                                              -- the agent
    r.split,                                                    -- task split
    r.beam,                                                     -- JOSH beam width
    r.semantics,                                                -- fixed | parity
    s.rollouts,                                                 -- rollouts committed
    s.average_reward,                                           -- Average Reward
    s.success_rate,                                             -- 100% Success Rate
    s.goal_reward,                                              -- mean share of goals credited (JOSH's turns)
    coalesce(n.nodes, 0) AS nodes,                              -- tree nodes stored (pruned ones too)
    coalesce(n.pruned, 0) AS pruned,                            -- branches cut by a collapse
    coalesce(n.golden, 0) AS golden,                            -- nodes on golden paths
    coalesce(c.tool_calls, 0) AS tool_calls,                    -- tool calls made
    round(coalesce(c.tool_errors, 0) / greatest(coalesce(c.tool_calls, 0), 1), 4) AS tool_error_rate,  -- failed share
    coalesce(t.completion_tokens, 0) AS completion_tokens,      -- tokens generated
    r.status                                                    -- running | done | interrupted | failed
FROM runs AS r
JOIN run_scores AS s ON s.run_id = r.run_id
LEFT JOIN nodes_per_run AS n ON n.run_id = r.run_id
LEFT JOIN run_tool_calls AS c ON c.run_id = r.run_id
LEFT JOIN tokens_per_run AS t ON t.run_id = r.run_id
WHERE r.kind = 'harvest'
ORDER BY r.created_at
