-- run_scores: one row per run: rollouts finished and the metrics over them.
-- The one definition of Average Reward and 100% Success Rate that eval_summary and harvest_summary share: a
-- rollout's reward is its environment's own episode reward where it has one (τ-bench: 0 or 1, so Average Reward
-- is pass^1), else the share of goals credited (ToolWOZ); goal_reward is that share in every environment.
CREATE OR REPLACE VIEW run_scores AS
SELECT
    r.run_id,                                                        -- the run
    count(o.rollout_id) AS rollouts,                                 -- finished rollouts (committed)
    count(o.rollout_id) FILTER (o.status = 'failed') AS failed,      -- rollouts that ended in an error
    round(avg(coalesce(o.episode_reward, o.reward)), 4) AS average_reward,  -- mean reward (NULL: no rollouts)
    round(avg(CASE WHEN is_success(coalesce(o.episode_reward, o.reward)) THEN 1.0 ELSE 0.0 END), 4)
        AS success_rate,                                             -- share with the full reward
    round(avg(o.reward), 4) AS goal_reward,                          -- mean of goals done / goals total
    coalesce(sum(o.goals_done), 0) AS goals_done,                    -- goals credited
    coalesce(sum(o.goals_total), 0) AS goals_total                   -- goals of the finished tasks
FROM runs AS r
LEFT JOIN rollouts AS o ON o.run_id = r.run_id
GROUP BY r.run_id
