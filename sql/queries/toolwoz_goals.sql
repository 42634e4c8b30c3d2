-- toolwoz_goals: one row per (split, domain): tasks with that domain and their search / book goals.
-- Parameter $split: a split name, or NULL for every split.
WITH goals AS (
    SELECT
        s.split,
        d.domain,
        t.task_id,
        unnest(json_keys(t.ground_truth, '$.' || d.domain || '.success')) AS api
    FROM tasks AS t, unnest(t.splits) AS s(split), unnest(t.domains) AS d(domain)
    WHERE $split IS NULL OR s.split = $split
)
SELECT
    split,                                                  -- split name
    domain,                                                 -- restaurant, hotel, attraction or train
    count(DISTINCT task_id) AS tasks,                       -- tasks with a goal in this domain
    count(*) FILTER (api LIKE 'search\_%' ESCAPE '\') AS search_goals,  -- search_<domain> goals
    count(*) FILTER (api LIKE 'book\_%' ESCAPE '\') AS book_goals       -- book_<domain> goals
FROM goals
GROUP BY split, domain
ORDER BY split, domain
