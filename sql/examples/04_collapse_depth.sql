-- 04_collapse_depth: How deep into the conversation does the JOSH tree collapse? Per harvest run and depth: the
-- collapses (a step where a branch met a goal and the tree kept only it), how many were their rollout's first,
-- the goals credited, the branches alive at that step and how many the collapse pruned (from branch_stats).
WITH collapses AS (
    SELECT b.*, b.step = min(b.step) OVER (PARTITION BY b.rollout_id) AS is_first
    FROM branch_stats AS b
    WHERE b.goals_credited > 0
)
SELECT
    regexp_extract(r.agent_model, '[^/]+$') AS agent,        -- teacher, or the model folder's name
    c.depth,                                                 -- depth of the rewarded node (= agent turn)
    count(*) AS collapses,                                   -- rollouts that collapsed at this depth
    count(*) FILTER (c.is_first) AS first_collapses,         -- ... for the first time
    sum(c.goals_credited)::INTEGER AS goals_credited,        -- goals credited by those collapses
    round(avg(c.width), 2) AS mean_width,                    -- branches created at that step
    sum(c.pruned)::INTEGER AS pruned                         -- branches cut
FROM collapses AS c
JOIN runs AS r ON r.run_id = c.run_id
WHERE r.kind = 'harvest'
GROUP BY r.run_id, r.agent_model, r.created_at, c.depth
ORDER BY r.created_at, c.depth
