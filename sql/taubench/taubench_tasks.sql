-- taubench_tasks: τ-bench tasks of both domains, one row per (domain, split, idx); `actions` the gold tool calls [{name, kwargs}] in order
CREATE TABLE IF NOT EXISTS taubench_tasks (
    task_id VARCHAR PRIMARY KEY,
    domain VARCHAR NOT NULL,
    split VARCHAR NOT NULL,
    idx INTEGER NOT NULL,
    user_id VARCHAR,
    instruction VARCHAR NOT NULL,
    actions JSON NOT NULL,
    outputs VARCHAR[] NOT NULL
)
