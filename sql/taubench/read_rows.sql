-- read_rows: the version of each asked row ($keys) of one table that a branch sees: the latest write of its path (deepest node, then last call), else the base row; doc NULL = deleted, a key with no row at all is absent
SELECT key, arg_max_null(doc, version) AS doc
FROM (
    SELECT key, after AS doc, {'depth': list_position($path, node_id), 'pos': pos} AS version
    FROM taubench_writes
    WHERE rollout_id = $rollout_id AND tbl = $tbl AND list_contains($path, node_id) AND list_contains($keys, key)
    UNION ALL
    SELECT key, doc, {'depth': 0, 'pos': 0}
    FROM taubench_base
    WHERE domain = $domain AND tbl = $tbl AND list_contains($keys, key)
)
GROUP BY key
