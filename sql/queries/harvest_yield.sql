-- harvest_yield: what some runs' finished rollouts cost and found: the tokens they generated over every branch, the
-- rollouts that reached min_reward, the distinct tasks those cover, and the full successes (100% Success) among them.
-- Parameters $run_ids (a list of run ids), $min_reward.
SELECT
    coalesce(sum(completion_tokens), 0) AS generated_tokens,                           -- what sampling cost
    count(*) FILTER (reward >= $min_reward) AS kept,                                   -- rollouts with a training row
    count(DISTINCT task_id) FILTER (reward >= $min_reward) AS tasks_kept,              -- tasks those cover
    count(*) FILTER (is_success(coalesce(episode_reward, reward))) AS full_successes   -- every goal met
FROM rollouts
WHERE list_contains($run_ids, run_id) AND status = 'done'
