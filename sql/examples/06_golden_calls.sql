-- 06_golden_calls: What does SFT on the golden paths teach about tool calls? Per harvest run: the tool calls on
-- the golden paths of the rollouts that met a goal (the `sft` view's rows at min_reward 0.01), those whose turn met
-- a goal (JOSH's reward credited it), those that failed, and those that ran but met no goal: a search on part of
-- the constraints (the teacher makes those too), or a value the customer never asked for, a booking at the wrong
-- time. The reward grades only goal calls, so the last kind lands in the SFT data as if it were right.
WITH golden AS (
    SELECT n.rollout_id, n.node_id,
           EXISTS (SELECT 1 FROM rewards AS w
                   WHERE w.rollout_id = n.rollout_id AND w.node_id = n.node_id AND w.credited) AS met_goal
    FROM nodes AS n
    JOIN rollouts AS o ON o.rollout_id = n.rollout_id
    WHERE n.is_golden AND o.reward > 0
),
calls AS (
    SELECT o.run_id, g.met_goal, c.ok
    FROM golden AS g
    JOIN tool_calls AS c ON c.rollout_id = g.rollout_id AND c.node_id = g.node_id
    JOIN rollouts AS o ON o.rollout_id = g.rollout_id
)
SELECT
    regexp_extract(r.agent_model, '[^/]+$') AS agent,                 -- teacher, or the model folder's name
    r.beam,                                                           -- JOSH beam width
    count(*) AS golden_calls,                                         -- tool calls on rewarded golden paths
    count(*) FILTER (c.met_goal) AS met_goal,                         -- in a turn that met a goal
    count(*) FILTER (NOT c.ok) AS failed,                             -- tool errors (unknown name, no such row ...)
    count(*) FILTER (c.ok AND NOT c.met_goal) AS ungraded,            -- ran, met no goal: unchecked by the reward
    round(count(*) FILTER (c.ok AND NOT c.met_goal) / count(*), 3) AS ungraded_share
FROM calls AS c
JOIN runs AS r ON r.run_id = c.run_id
WHERE r.kind = 'harvest'
GROUP BY r.run_id, r.agent_model, r.beam, r.created_at
ORDER BY r.created_at
