-- read_base: one base row's JSON text (no row: the key is not in the base database)
SELECT doc FROM taubench_base WHERE domain = $domain AND tbl = $tbl AND key = $key
