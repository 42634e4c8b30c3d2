-- taubench_rows: every row of one τ-bench table as a branch sees it: the base rows overlaid with the latest write (deepest node of `node_path`, then last call) of the branch's own path; key, ord (τ-bench's iteration order: file order, then created rows in creation order; depths, positions and writes per call below 1e5), doc
CREATE OR REPLACE TEMP MACRO taubench_rows(domain_name, table_name, rollout, node_path) AS TABLE
WITH written AS (
    SELECT key,
           arg_max_null(after, {'depth': list_position(node_path, node_id), 'pos': pos}) AS doc,
           min({'depth': list_position(node_path, node_id), 'pos': pos, 'seq': seq}) AS first_write
    FROM taubench_writes
    WHERE rollout_id = rollout AND tbl = table_name AND list_contains(node_path, node_id)
    GROUP BY key
), base AS (
    SELECT key, ord, doc FROM taubench_base WHERE domain = domain_name AND tbl = table_name
)
SELECT coalesce(base.key, written.key) AS key,
       coalesce(base.ord, 1000000000000000 + written.first_write.depth::BIGINT * 10000000000
                + written.first_write.pos::BIGINT * 100000 + written.first_write.seq) AS ord,
       CASE WHEN written.key IS NULL THEN base.doc ELSE written.doc END AS doc
FROM base FULL JOIN written ON base.key = written.key
WHERE written.key IS NULL OR written.doc IS NOT NULL
