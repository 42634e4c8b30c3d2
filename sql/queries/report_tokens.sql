-- report_tokens: one row per rollout of the requested runs: the tokens its tree read and generated, its size and
-- reward. Columns: run_id, rollout_id, task_id, reward, n_nodes, prompt_tokens, completion_tokens.
-- Parameter $run_ids: a list of run ids.
SELECT
    run_id,                                          -- the run
    rollout_id,                                      -- the rollout
    task_id,                                         -- its task
    reward,                                          -- goals done / goals total
    n_nodes,                                         -- tree nodes
    coalesce(prompt_tokens, 0) AS prompt_tokens,     -- prompt tokens over every branch
    coalesce(completion_tokens, 0) AS completion_tokens  -- generated tokens over every branch
FROM rollouts
WHERE list_contains($run_ids, run_id)
ORDER BY list_position($run_ids, run_id), rollout_id
