-- run_tool_calls: one row per run that made tool calls: how many, and how many failed.
CREATE OR REPLACE VIEW run_tool_calls AS
SELECT
    o.run_id,                                     -- the run
    count(*) AS tool_calls,                       -- tool calls made (malformed output included)
    count(*) FILTER (NOT c.ok) AS tool_errors     -- calls that failed
FROM tool_calls AS c
JOIN rollouts AS o ON o.rollout_id = c.rollout_id
GROUP BY o.run_id
