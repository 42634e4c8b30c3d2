-- taubench_base: the rows the tools read, of both τ-bench databases: (domain, tbl, key, ord, doc) with `tbl` τ-bench's data key (users, orders, ...), `doc` the record's JSON text exactly as `json.dumps` writes it and `ord` its position in the file
CREATE TABLE IF NOT EXISTS taubench_base (
    domain VARCHAR NOT NULL,
    tbl VARCHAR NOT NULL,
    key VARCHAR NOT NULL,
    ord INTEGER NOT NULL,
    doc JSON NOT NULL,
    PRIMARY KEY (domain, tbl, key)
)
