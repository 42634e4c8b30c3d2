-- eval_summary: one row per eval run: who talked to whom on which split, and its metrics (run_scores).
CREATE OR REPLACE VIEW eval_summary AS
SELECT
    r.run_id,                 -- the eval run
    r.env,                    -- toolwoz | retail | airline
    r.agent_model,            -- model path / Hub id, openai:MODEL, or teacher
    r.user_model,             -- rule, or the LLM user's model
    r.protocol,               -- tools | react
    r.split,                  -- task split evaluated
    r.semantics,              -- fixed | parity
    s.rollouts,               -- conversations finished
    s.failed,                 -- conversations that ended in an error
    s.average_reward,         -- Average Reward
    s.success_rate,           -- 100% Success Rate
    s.goal_reward,            -- mean share of goals credited (JOSH's turn rewards)
    r.status,                 -- running | done | interrupted | failed
    r.created_at              -- when the run started
FROM runs AS r
JOIN run_scores AS s ON s.run_id = r.run_id
WHERE r.kind = 'eval'
ORDER BY r.created_at
