-- path_conversations: one row per node of a dataset rollout (dataset_rollouts: its parameters apply): the
-- conversation from the root to that node, cut after its last assistant message (NULL if it has none).
-- What `sft` (last golden node) and `sft_unfiltered` (deepest node) pick their row from.
CREATE OR REPLACE VIEW path_conversations AS
SELECT
    d.rollout_id,                                 -- the rollout
    d.run_id,                                     -- its run
    d.task_id,                                    -- its task
    d.reward,                                     -- its reward
    t.node_id,                                    -- the last node of the path
    list_slice(t.messages, 1,
               len(t.messages) + 1 - list_position(list_reverse(list_transform(t.messages, lambda m: m.role)),
                                                   'assistant')) AS messages,  -- system, user, assistant ...
    d.tools                                       -- tool schemas as JSON text
FROM dataset_rollouts AS d
JOIN trajectories AS t ON t.rollout_id = d.rollout_id
