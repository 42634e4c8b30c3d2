-- tool_errors: one row per (run, tool, error kind): how often the agent's calls failed that way, with an
-- example message. Malformed model output has tool NULL and kind malformed_call.
CREATE OR REPLACE VIEW tool_errors AS
SELECT
    o.run_id,                                    -- the run
    c.name AS tool,                              -- the tool called (NULL when unparseable)
    c.error_kind,                                -- unknown_tool, unknown_argument, bad_value, ...
    count(*) AS errors,                          -- how many calls failed this way
    any_value(c.error) AS example                -- one of the messages the agent saw
FROM tool_calls AS c
JOIN rollouts AS o ON o.rollout_id = c.rollout_id
WHERE NOT c.ok
GROUP BY o.run_id, c.name, c.error_kind
ORDER BY errors DESC
