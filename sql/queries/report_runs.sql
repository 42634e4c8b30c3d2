-- report_runs: one row per requested run (in the order given): what ran and how well, for the report's table.
-- Columns: run_id, kind, agent, user, split, beam, rollouts, average_reward, success_rate, nodes, golden,
-- tool_calls, tool_error_rate, prompt_tokens, completion_tokens, status. Parameter $run_ids: a list of run ids.
WITH tree AS (
    SELECT o.run_id, count(*) AS nodes, count(*) FILTER (n.is_golden) AS golden
    FROM nodes AS n JOIN rollouts AS o ON o.rollout_id = n.rollout_id
    WHERE list_contains($run_ids, o.run_id)
    GROUP BY o.run_id
),
tokens AS (
    SELECT run_id, sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens
    FROM rollouts
    WHERE list_contains($run_ids, run_id)
    GROUP BY run_id
)
SELECT
    r.run_id,                                                         -- the run
    r.kind,                                                           -- harvest | eval
    regexp_extract(r.agent_model, '[^/]+$') AS agent,                 -- teacher, or the model folder's name
    r.user_model AS "user",                                           -- user simulator
    r.split,                                                          -- task split
    r.beam,                                                           -- JOSH beam (1 for evals)
    s.rollouts,                                                       -- rollouts committed
    s.average_reward,                                                 -- Average Reward (run_scores)
    s.success_rate,                                                   -- 100% Success Rate (run_scores)
    coalesce(t.nodes, 0) AS nodes,                                    -- tree nodes stored
    coalesce(t.golden, 0) AS golden,                                  -- nodes on golden paths
    coalesce(c.tool_calls, 0) AS tool_calls,                          -- tool calls made
    round(coalesce(c.tool_errors, 0) / greatest(coalesce(c.tool_calls, 0), 1), 4) AS tool_error_rate,  -- failed share
    coalesce(k.prompt_tokens, 0) AS prompt_tokens,                    -- prompt tokens read
    coalesce(k.completion_tokens, 0) AS completion_tokens,            -- tokens generated
    r.status                                                          -- running | done | interrupted | failed
FROM runs AS r
JOIN run_scores AS s ON s.run_id = r.run_id
LEFT JOIN tree AS t ON t.run_id = r.run_id
LEFT JOIN run_tool_calls AS c ON c.run_id = r.run_id
LEFT JOIN tokens AS k ON k.run_id = r.run_id
WHERE list_contains($run_ids, r.run_id)
ORDER BY list_position($run_ids, r.run_id)
