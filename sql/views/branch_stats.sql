-- branch_stats: one row per (rollout, step): how wide the tree was, how many branches ended and why,
-- and the goals credited at that step (reward per step).
CREATE OR REPLACE VIEW branch_stats AS
SELECT
    o.run_id,                                                           -- the run
    n.rollout_id,                                                       -- the rollout
    n.created_step AS step,                                             -- JOSH step (0 = root)
    count(*) AS width,                                                  -- nodes created at this step
    max(n.depth) AS depth,                                              -- depth reached
    count(*) FILTER (n.is_successful) AS rewarded,                      -- nodes on a rewarded path
    count(*) FILTER (n.end_reason = 'pruned') AS pruned,                -- branches cut by the collapse
    count(*) FILTER (n.end_reason = 'user_ended') AS user_ended,        -- branches the user closed
    count(*) FILTER (n.end_reason IN ('error', 'context_overflow')) AS failed,  -- branches that broke
    (SELECT count(*) FROM rewards AS w
     WHERE w.rollout_id = n.rollout_id AND w.step = n.created_step AND w.credited) AS goals_credited  -- reward this step
FROM nodes AS n
JOIN rollouts AS o ON o.rollout_id = n.rollout_id
GROUP BY o.run_id, n.rollout_id, n.created_step
ORDER BY n.rollout_id, step
