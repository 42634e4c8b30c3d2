-- taubench_writes: every write of every branch (temporary, on the env's connection): the row version a tool call left, keyed by rollout, node, call position and the write's place in the call (`seq`, so rows a call creates keep their order); `before`/`after` NULL = the row did not exist / was deleted; the hashes are of canonical JSON (keys sorted) for the episode reward
CREATE TEMP TABLE IF NOT EXISTS taubench_writes (
    rollout_id VARCHAR NOT NULL,
    node_id INTEGER NOT NULL,
    pos INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    tbl VARCHAR NOT NULL,
    key VARCHAR NOT NULL,
    before JSON,
    after JSON,
    before_hash VARCHAR,
    after_hash VARCHAR
)
