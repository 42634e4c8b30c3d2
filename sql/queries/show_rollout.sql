-- show_rollout: one row for the rollout `factory show` draws: its outcome and the run and task it belongs to.
-- Columns: rollout_id, run_id, kind, agent, user, beam, task_id, domains, status, reward, goals_done,
-- goals_total, n_nodes, n_steps, end_reason, prompt_tokens, completion_tokens, error. Parameter $rollout_id.
SELECT
    o.rollout_id,                  -- the rollout
    o.run_id,                      -- its run
    r.kind,                        -- harvest | eval
    r.agent_model AS agent,        -- model path / Hub id, openai:MODEL, or teacher
    r.user_model AS "user",        -- user simulator
    r.beam,                        -- JOSH beam
    o.task_id,                     -- the task
    t.domains,                     -- its domains
    o.status,                      -- done | failed
    o.reward,                      -- goals done / goals total
    o.goals_done,                  -- goals credited
    o.goals_total,                 -- goals of the task
    o.n_nodes,                     -- tree nodes
    o.n_steps,                     -- JOSH steps
    o.end_reason,                  -- all_goals | user_ended | max_steps | no_live_leaf | error
    o.prompt_tokens,               -- prompt tokens over every branch
    o.completion_tokens,           -- generated tokens over every branch
    o.error                        -- the error, for a failed rollout
FROM rollouts AS o
JOIN runs AS r ON r.run_id = o.run_id
LEFT JOIN tasks AS t ON t.task_id = o.task_id
WHERE o.rollout_id = $rollout_id
