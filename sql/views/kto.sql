-- kto: one row per KTO example (TRL columns prompt, completion, label, tools): every assistant message
-- on a golden path is desirable; an assistant message of a node that is neither golden nor successful is
-- undesirable when its prompt equals a desirable example's prompt in the same tree (a sibling at a divergence
-- point; never a turn of another run or rollout that happens to share the opening).
-- Exact duplicates are removed, and so is an undesirable message identical to a desirable one for the same
-- prompt (the branches parted later). Parameters: as dataset_rollouts (min_reward, run_id).
CREATE OR REPLACE VIEW kto AS
WITH examples AS (
    SELECT e.*, md5(to_json(e.prompt)::VARCHAR) AS prompt_key, md5(to_json(e.completion)::VARCHAR) AS completion_key
    FROM turn_examples AS e
),
good AS (SELECT * FROM examples WHERE is_golden),
bad AS (
    SELECT * FROM examples
    WHERE NOT is_golden AND NOT is_successful AND (rollout_id, prompt_key) IN (SELECT (rollout_id, prompt_key) FROM good)
      AND (prompt_key, completion_key) NOT IN (SELECT (prompt_key, completion_key) FROM good)
),
labelled AS (
    SELECT *, true AS label FROM good
    UNION ALL
    SELECT *, false AS label FROM bad
)
SELECT
    any_value(l.rollout_id ORDER BY l.rollout_id, l.node_id, l.pos) AS rollout_id,  -- first rollout with it
    any_value(d.run_id ORDER BY l.rollout_id) AS run_id,                              -- its run
    any_value(l.prompt) AS prompt,                                                    -- conversation so far
    any_value(l.completion) AS completion,                                            -- [assistant message]
    l.label,                                                                          -- desirable?
    any_value(d.tools) AS tools                                                       -- tool schemas (JSON)
FROM labelled AS l
JOIN dataset_rollouts AS d ON d.rollout_id = l.rollout_id
GROUP BY l.prompt_key, l.completion_key, l.label
