-- tables: the τ-bench tables of a database (both domains' rows, tasks and policy; not the temporary writes), by name
SELECT table_name FROM duckdb_tables() WHERE NOT temporary AND schema_name = 'main' AND table_name LIKE 'taubench\_%' ESCAPE '\' ORDER BY table_name
