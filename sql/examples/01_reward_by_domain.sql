-- 01_reward_by_domain: How well does each agent do in each domain? Per run and domain: the rollouts whose task
-- has a goal there, those goals (ground-truth search_* / book_* calls), how many were credited, and the mean
-- reward of those rollouts.
WITH per_rollout AS (
    SELECT o.run_id, o.rollout_id, o.reward, d.domain,
           json_array_length(json_keys(t.ground_truth, '$.' || d.domain || '.success')) AS goals,
           (SELECT count(DISTINCT w.goal) FROM rewards AS w
            WHERE w.rollout_id = o.rollout_id AND w.domain = d.domain AND w.credited) AS credited
    FROM rollouts AS o
    JOIN tasks AS t ON t.task_id = o.task_id, unnest(t.domains) AS d(domain)
)
SELECT
    r.kind,                                                   -- harvest | eval
    regexp_extract(r.agent_model, '[^/]+$') AS agent,         -- teacher, or the model folder's name
    p.domain,                                                 -- restaurant, hotel, attraction, train
    count(*) AS rollouts,                                     -- rollouts with a goal in this domain
    sum(p.goals)::INTEGER AS goals,                           -- their goals in this domain
    sum(p.credited)::INTEGER AS credited,                     -- goals credited
    round(sum(p.credited) / sum(p.goals), 3) AS goal_rate,    -- credited share
    round(avg(p.reward), 3) AS mean_reward                    -- mean reward of those rollouts (all domains)
FROM per_rollout AS p
JOIN runs AS r ON r.run_id = p.run_id
GROUP BY r.run_id, r.kind, r.agent_model, r.created_at, p.domain
ORDER BY r.created_at, p.domain
