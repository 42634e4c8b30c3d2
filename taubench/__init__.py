"""τ-bench retail and airline on DuckDB: base tables once, each JOSH branch's writes as rows (see `state`)."""
