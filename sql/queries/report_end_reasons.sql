-- report_end_reasons: one row per (run, scope, end reason): how rollouts ended (scope `rollout`: all_goals,
-- user_ended, max_steps, ...) and how their branches ended (scope `branch`: pruned, user_ended, ...).
-- Columns: run_id, scope, end_reason, n. Parameter $run_ids: a list of run ids.
SELECT
    run_id,                                          -- the run
    'rollout' AS scope,                              -- rollout | branch
    coalesce(end_reason, 'unknown') AS end_reason,   -- why it ended
    count(*) AS n                                    -- how many
FROM rollouts
WHERE list_contains($run_ids, run_id)
GROUP BY run_id, end_reason
UNION ALL
SELECT o.run_id, 'branch', coalesce(n.end_reason, 'unknown'), count(*)
FROM nodes AS n
JOIN rollouts AS o ON o.rollout_id = n.rollout_id
WHERE n.ended AND list_contains($run_ids, o.run_id)
GROUP BY o.run_id, n.end_reason
ORDER BY list_position($run_ids, run_id), scope DESC, n DESC, end_reason
