-- dataset_rollouts: one row per rollout the dataset views may use, with the tools its run offered.
-- Parameters (DuckDB variables): run_id (one run; default every harvest run), min_reward (default 1.0).
CREATE OR REPLACE VIEW dataset_rollouts AS
SELECT
    o.rollout_id,           -- the rollout
    o.run_id,               -- its run
    o.task_id,              -- its task
    o.reward,               -- goals done / goals total
    r.kind,                 -- harvest | eval
    r.tools                 -- tool schemas offered to the agent (JSON text), NULL for react
FROM rollouts AS o
JOIN runs AS r ON r.run_id = o.run_id
WHERE o.status = 'done'
  AND o.reward >= coalesce(getvariable('min_reward'), 1.0)
  AND (getvariable('run_id') IS NULL AND r.kind = 'harvest' OR o.run_id = getvariable('run_id'))
