-- kto_samples: one row per KTO example (TRL columns prompt, completion, label, tools) from independent samples,
-- the negatives of rejection sampling (`factory loop --baseline rft`): every assistant message on the golden path
-- of a sample with reward >= min_reward is desirable; every assistant message of a finished sample below
-- min_reward (a failed conversation of the same tasks, along its deepest branch) is undesirable. Exact duplicates
-- are removed, and so is an undesirable message identical to a desirable one for the same prompt.
-- Parameters: min_reward (1.0), run_id (every harvest run).
CREATE OR REPLACE VIEW kto_samples AS
WITH samples AS (
    SELECT o.rollout_id, o.run_id, o.reward >= coalesce(getvariable('min_reward'), 1.0) AS passed, r.tools
    FROM rollouts AS o
    JOIN runs AS r ON r.run_id = o.run_id
    WHERE o.status = 'done'
      AND (getvariable('run_id') IS NULL AND r.kind = 'harvest' OR o.run_id = getvariable('run_id'))
),
ends AS (
    -- the path an example's messages come from: to the last golden node of a passed sample, else the deepest
    SELECT s.rollout_id, s.run_id, s.passed, s.tools,
           CASE WHEN s.passed THEN arg_max(n.path, n.depth) FILTER (n.is_golden)
                ELSE arg_max(n.path, n.depth) END AS path
    FROM samples AS s
    JOIN nodes AS n ON n.rollout_id = s.rollout_id
    GROUP BY s.rollout_id, s.run_id, s.passed, s.tools
),
conversations AS (
    SELECT e.rollout_id, e.run_id, e.passed, e.tools, list(c.message ORDER BY p.depth, c.pos) AS messages
    FROM ends AS e
    JOIN nodes AS p ON p.rollout_id = e.rollout_id AND list_contains(e.path, p.node_id)
    JOIN chat_messages AS c ON c.rollout_id = p.rollout_id AND c.node_id = p.node_id
    GROUP BY e.rollout_id, e.run_id, e.passed, e.tools
),
turns AS (
    SELECT rollout_id, run_id, passed AS label, tools,
           list_slice(messages, 1, i - 1) AS prompt, [messages[i]] AS completion
    FROM conversations, range(1, len(messages) + 1) AS r(i)
    WHERE messages[i].role = 'assistant'
),
keyed AS (
    SELECT *, md5(to_json(prompt)::VARCHAR) AS prompt_key, md5(to_json(completion)::VARCHAR) AS completion_key
    FROM turns
)
SELECT
    any_value(rollout_id ORDER BY rollout_id) AS rollout_id,  -- first sample with it
    any_value(run_id ORDER BY rollout_id) AS run_id,          -- its run
    any_value(prompt) AS prompt,                              -- conversation so far
    any_value(completion) AS completion,                      -- [assistant message]
    label,                                                    -- desirable?
    any_value(tools) AS tools                                 -- tool schemas (JSON)
FROM keyed AS k
WHERE label OR (prompt_key, completion_key) NOT IN (SELECT (prompt_key, completion_key) FROM keyed WHERE label)
GROUP BY prompt_key, completion_key, label
