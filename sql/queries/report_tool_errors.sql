-- report_tool_errors: one row per (run, tool-error kind): failed calls of that kind (summed over tools from the
-- tool_errors view) and their share of the run's tool calls (run_tool_calls).
-- Columns: run_id, error_kind, errors, share_of_calls. Parameter $run_ids: a list of run ids.
SELECT
    e.run_id,                                                        -- the run
    e.error_kind,                                                    -- unknown_argument, no_availability, ...
    sum(e.errors)::INTEGER AS errors,                                -- failed calls of this kind
    round(sum(e.errors) / any_value(c.tool_calls), 4) AS share_of_calls  -- their share of all the run's calls
FROM tool_errors AS e
JOIN run_tool_calls AS c ON c.run_id = e.run_id
WHERE list_contains($run_ids, e.run_id)
GROUP BY e.run_id, e.error_kind
ORDER BY list_position($run_ids, e.run_id), errors DESC, e.error_kind
