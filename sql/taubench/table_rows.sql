-- table_rows: every row (key, doc) of one table as a branch sees it, in τ-bench's iteration order
SELECT key, doc FROM taubench_rows($domain, $tbl, $rollout_id, $path) ORDER BY ord
