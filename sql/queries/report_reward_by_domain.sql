-- report_reward_by_domain: one row per (run, domain): the goals of that domain (ground-truth search_* / book_*
-- calls of the rollouts' tasks), how many were credited, and the mean reward of the rollouts with a goal there.
-- Columns: run_id, domain, rollouts, goals, credited, goal_rate, mean_reward. Parameter $run_ids: a list of run ids.
WITH goals AS (
    SELECT o.run_id, o.rollout_id, o.reward, d.domain, g.goal,
           EXISTS (SELECT 1 FROM rewards AS w
                   WHERE w.rollout_id = o.rollout_id AND w.goal = g.goal AND w.credited) AS credited
    FROM rollouts AS o
    JOIN tasks AS t ON t.task_id = o.task_id,
         unnest(t.domains) AS d(domain),
         unnest(json_keys(t.ground_truth, '$.' || d.domain || '.success')) AS g(goal)
    WHERE list_contains($run_ids, o.run_id)
),
per_rollout AS (
    SELECT run_id, domain, rollout_id, any_value(reward) AS reward, count(*) AS goals,
           count(*) FILTER (credited) AS credited
    FROM goals
    GROUP BY run_id, domain, rollout_id
)
SELECT
    run_id,                                                  -- the run
    domain,                                                  -- restaurant, hotel, attraction, train
    count(*) AS rollouts,                                    -- rollouts with a goal in this domain
    sum(goals)::INTEGER AS goals,                            -- their goals in this domain
    sum(credited)::INTEGER AS credited,                      -- goals credited
    round(sum(credited) / sum(goals), 4) AS goal_rate,       -- credited share (the figure's bars)
    round(avg(reward), 4) AS mean_reward                     -- mean reward of those rollouts (all domains)
FROM per_rollout
GROUP BY run_id, domain
ORDER BY list_position($run_ids, run_id), domain
