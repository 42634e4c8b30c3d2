-- db_diff: the rows on which two branches' databases differ: each side's latest version of every row either side wrote (the base where a side never wrote it, i.e. the other side's first `before`), compared by the hash of their canonical JSON; empty = the databases are equal
WITH versions AS (
    SELECT coalesce(a.tbl, b.tbl) AS tbl, coalesce(a.key, b.key) AS key,
           CASE WHEN a.key IS NULL THEN b.base ELSE a.final END AS version_a,
           CASE WHEN b.key IS NULL THEN a.base ELSE b.final END AS version_b
    FROM branch_versions($rollout_a, $path_a) AS a
    FULL JOIN branch_versions($rollout_b, $path_b) AS b ON a.tbl = b.tbl AND a.key = b.key
)
SELECT tbl, key, version_a, version_b FROM versions
WHERE version_a IS DISTINCT FROM version_b
ORDER BY tbl, key
