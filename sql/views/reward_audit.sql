-- reward_audit: one row per run: goals credited vs. matched by any branch, how rollouts ended, and
-- tool error rates; the place to look when a reward number seems off.
CREATE OR REPLACE VIEW reward_audit AS
WITH matched AS (
    SELECT o.run_id, count(*) AS matches, count(*) FILTER (w.credited) AS credited,
           count(DISTINCT (w.rollout_id, w.goal)) AS distinct_goals_matched
    FROM rewards AS w JOIN rollouts AS o ON o.rollout_id = w.rollout_id
    GROUP BY o.run_id
)
SELECT
    r.run_id,                                                                 -- the run
    r.kind,                                                                   -- harvest | eval
    sum(o.goals_total) AS goals_total,                                        -- goals of finished rollouts
    sum(o.goals_done) AS goals_credited,                                      -- goals credited (reward)
    any_value(m.distinct_goals_matched) AS goals_matched,                     -- goals some branch matched
    any_value(m.matches) AS matches,                                          -- (node, goal) matches
    count(*) FILTER (o.end_reason = 'user_ended' AND o.goals_done < o.goals_total) AS ended_by_user_early,  -- user hung up first
    count(*) FILTER (o.end_reason = 'max_steps') AS hit_max_steps,            -- ran out of steps
    count(*) FILTER (o.status = 'failed') AS failed,                          -- rollouts that crashed
    any_value(c.tool_calls) AS tool_calls,                                    -- tool calls made
    round(coalesce(any_value(c.tool_errors), 0) / greatest(coalesce(any_value(c.tool_calls), 0), 1), 4) AS tool_error_rate  -- failed share
FROM runs AS r
JOIN rollouts AS o ON o.run_id = r.run_id
LEFT JOIN matched AS m ON m.run_id = r.run_id
LEFT JOIN run_tool_calls AS c ON c.run_id = r.run_id
GROUP BY r.run_id, r.kind
