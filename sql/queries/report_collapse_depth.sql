-- report_collapse_depth: one row per (run, depth): the collapses at that depth (a step where a branch met a goal
-- and the tree kept only it, from branch_stats), how many were their rollout's first, goals credited, pruned.
-- Columns: run_id, depth, collapses, first_collapses, goals_credited, pruned. Parameter $run_ids: run ids.
WITH collapses AS (
    SELECT b.run_id, b.depth, b.goals_credited, b.pruned,
           b.step = min(b.step) OVER (PARTITION BY b.rollout_id) AS is_first
    FROM branch_stats AS b
    WHERE b.goals_credited > 0 AND list_contains($run_ids, b.run_id)
)
SELECT
    run_id,                                          -- the run
    depth,                                           -- depth of the rewarded node (= agent turn)
    count(*) AS collapses,                           -- collapses at this depth
    count(*) FILTER (is_first) AS first_collapses,   -- ... that were the rollout's first
    sum(goals_credited)::INTEGER AS goals_credited,  -- goals credited by them
    sum(pruned)::INTEGER AS pruned                   -- branches they cut
FROM collapses
GROUP BY run_id, depth
ORDER BY list_position($run_ids, run_id), depth
