-- paired_rewards: one row per task finished by both runs: each run's mean reward on it (samples averaged); the
-- reward as run_scores defines it (the environment's episode reward where it has one, else goals done / total).
-- Parameters $run_a, $run_b: the two run ids.
WITH a AS (SELECT task_id, avg(coalesce(episode_reward, reward)) AS reward FROM rollouts WHERE run_id = $run_a GROUP BY task_id),
     b AS (SELECT task_id, avg(coalesce(episode_reward, reward)) AS reward FROM rollouts WHERE run_id = $run_b GROUP BY task_id)
SELECT
    a.task_id,                            -- a task both runs finished
    a.reward AS reward_a,                 -- run A's reward on it
    b.reward AS reward_b,                 -- run B's reward on it
    is_success(a.reward) AS success_a,    -- run A did every goal of it (100% Success)
    is_success(b.reward) AS success_b     -- run B did every goal of it
FROM a
JOIN b ON a.task_id = b.task_id
ORDER BY a.task_id
