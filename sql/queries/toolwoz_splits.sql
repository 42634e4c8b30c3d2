-- toolwoz_splits: one row per named split: its tasks, goal API calls (reward units) and goals per kind.
-- Parameter $split: a split name, or NULL for every split. Splits with no task still get a row.
WITH names AS (
    SELECT name, position
    FROM unnest(['test', 'test_full', 'val', 'val_boot', 'val_harvest', 'train', 'synth']) WITH ORDINALITY AS n(name, position)
),
members AS (
    SELECT s.split, t.task_id, t.n_goals, t.domains
    FROM tasks AS t, unnest(t.splits) AS s(split)
)
SELECT
    names.name AS split,                             -- split name
    count(members.task_id) AS tasks,                 -- tasks in the split
    coalesce(sum(members.n_goals), 0) AS goals,      -- reward units (goal API calls)
    count(members.task_id) FILTER (len(members.domains) > 1) AS multi_domain  -- tasks with 2+ domains
FROM names
LEFT JOIN members ON members.split = names.name
WHERE $split IS NULL OR names.name = $split
GROUP BY names.name, names.position
ORDER BY names.position
