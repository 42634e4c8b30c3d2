-- report_branch_width: one row per (run, JOSH step): how wide the trees were (branch_stats) and how many branches
-- were still live (created at that step and not ended there), averaged over the rollouts that reached the step.
-- Columns: run_id, step, rollouts, mean_width, max_width, mean_live, pruned. Parameter $run_ids: run ids.
WITH live AS (
    SELECT rollout_id, created_step AS step, count(*) FILTER (NOT ended) AS live
    FROM nodes
    GROUP BY rollout_id, created_step
)
SELECT
    b.run_id,                                        -- the run
    b.step,                                          -- JOSH step (0 = the root)
    count(*) AS rollouts,                            -- rollouts that reached this step
    round(avg(b.width), 4) AS mean_width,            -- nodes created at this step, per rollout
    max(b.width) AS max_width,                       -- the widest tree at this step
    round(avg(l.live), 4) AS mean_live,              -- live leaves after this step, per rollout
    sum(b.pruned)::INTEGER AS pruned                 -- branches cut by a collapse at this step
FROM branch_stats AS b
JOIN live AS l ON l.rollout_id = b.rollout_id AND l.step = b.step
WHERE list_contains($run_ids, b.run_id)
GROUP BY b.run_id, b.step
ORDER BY list_position($run_ids, b.run_id), b.step
