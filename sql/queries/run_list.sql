-- run_list: one row per run (newest first): what ran, on which tasks, how far it got and how well.
-- Parameter $run_id: one run, or NULL for all.
SELECT
    r.run_id,                                   -- the run
    r.kind,                                     -- harvest | eval | train
    r.agent_model AS agent,                     -- model path / Hub id, openai:MODEL, or teacher
    r.user_model AS "user",                     -- user simulator
    r.split,                                    -- task split
    r.beam,                                     -- JOSH beam (1 for evals)
    s.rollouts,                                 -- rollouts committed
    s.failed,                                   -- of which failed on a backend / user error (a re-run retries)
    s.average_reward,                           -- mean rollout reward
    s.success_rate,                             -- share of rollouts with every goal done
    r.status,                                   -- running | done | interrupted | failed (`factory runs`: no live writer = interrupted)
    r.created_at                                -- start time
FROM runs AS r
JOIN run_scores AS s ON s.run_id = r.run_id
WHERE $run_id IS NULL OR r.run_id = $run_id
ORDER BY r.created_at DESC
