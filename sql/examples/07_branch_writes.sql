-- 07_branch_writes: Which branches cancelled, returned, exchanged or modified which order (τ-bench retail; the
-- same for airline reservations)? One row per (run, order, what its new version says), with the branches that
-- wrote it: how many, how many on the golden path, and how many were pruned. Reads `state_changes`, every write a
-- tool call made, keyed by its branch (rollout, node).
WITH writes AS (
    SELECT o.run_id, c.rollout_id, c.node_id, c.table_name, c.key,
           coalesce(c.after ->> '$.status', 'deleted') AS status,
           c.before ->> '$.status' AS status_before
    FROM state_changes AS c
    JOIN rollouts AS o ON o.rollout_id = c.rollout_id
)
SELECT
    w.run_id,                                                        -- the harvest or eval run
    w.table_name,                                                    -- orders, reservations, users, ...
    w.key,                                                           -- the row's id (an order id: #W...)
    coalesce(w.status_before, '-') || ' -> ' || w.status AS change,  -- its status before and after the write
    count(*) AS writes,                                              -- branches (nodes) that wrote it so
    count(*) FILTER (n.is_golden) AS golden,                         -- of them on the golden path
    count(*) FILTER (n.end_reason = 'pruned') AS pruned              -- of them cut by a collapse
FROM writes AS w
JOIN nodes AS n ON n.rollout_id = w.rollout_id AND n.node_id = w.node_id
GROUP BY w.run_id, w.table_name, w.key, change
ORDER BY w.run_id, w.table_name, w.key, writes DESC
