-- report_reward_by_goal_kind: one row per (run, goal kind): the rollouts' goals of that kind (`search` or `book`:
-- the ground-truth API's verb), how many were credited, and the mean reward of the rollouts with such a goal.
-- Columns: run_id, goal_kind, rollouts, goals, credited, goal_rate, mean_reward. Parameter $run_ids: run ids.
WITH goals AS (
    SELECT o.run_id, o.rollout_id, o.reward, split_part(g.goal, '_', 1) AS goal_kind,
           EXISTS (SELECT 1 FROM rewards AS w
                   WHERE w.rollout_id = o.rollout_id AND w.goal = g.goal AND w.credited) AS credited
    FROM rollouts AS o
    JOIN tasks AS t ON t.task_id = o.task_id,
         unnest(t.domains) AS d(domain),
         unnest(json_keys(t.ground_truth, '$.' || d.domain || '.success')) AS g(goal)
    WHERE list_contains($run_ids, o.run_id)
),
per_rollout AS (
    SELECT run_id, goal_kind, rollout_id, any_value(reward) AS reward, count(*) AS goals,
           count(*) FILTER (credited) AS credited
    FROM goals
    GROUP BY run_id, goal_kind, rollout_id
)
SELECT
    run_id,                                                  -- the run
    goal_kind,                                               -- search | book
    count(*) AS rollouts,                                    -- rollouts with a goal of this kind
    sum(goals)::INTEGER AS goals,                            -- their goals of this kind
    sum(credited)::INTEGER AS credited,                      -- goals credited
    round(sum(credited) / sum(goals), 4) AS goal_rate,       -- credited share (the figure's bars)
    round(avg(reward), 4) AS mean_reward                     -- mean reward of those rollouts
FROM per_rollout
GROUP BY run_id, goal_kind
ORDER BY list_position($run_ids, run_id), goal_kind DESC
