-- 03_tool_errors: What are the most common tool errors? Per agent, tool and error kind (the tool_errors view
-- summed over runs): how many calls failed that way, their share of that agent's calls to the tool, an example.
WITH calls AS (
    SELECT r.agent_model, c.name AS tool, count(*) AS calls
    FROM tool_calls AS c
    JOIN rollouts AS o ON o.rollout_id = c.rollout_id
    JOIN runs AS r ON r.run_id = o.run_id
    GROUP BY r.agent_model, c.name
)
SELECT
    regexp_extract(r.agent_model, '[^/]+$') AS agent,                -- teacher, or the model folder's name
    e.tool,                                                          -- NULL: output that was no tool call
    e.error_kind,                                                    -- missing_argument, no_availability, ...
    sum(e.errors)::INTEGER AS errors,                                -- failed calls of this kind
    round(sum(e.errors) / any_value(c.calls), 3) AS share_of_calls,  -- of the agent's calls to this tool
    left(regexp_replace(any_value(e.example), '\s+', ' ', 'g'), 60) AS example  -- what the agent was told
FROM tool_errors AS e
JOIN runs AS r ON r.run_id = e.run_id
JOIN calls AS c ON c.agent_model = r.agent_model AND c.tool IS NOT DISTINCT FROM e.tool
GROUP BY r.agent_model, e.tool, e.error_kind
ORDER BY errors DESC, agent, e.tool, e.error_kind
