-- toolwoz.hidden_rows: one row per (task, domain, DB row) that `fixed` semantics hides from that task:
-- the rows the user's doomed first search (goal `fail_info`) would find, unless they also meet the goal.
CREATE TABLE toolwoz.hidden_rows (
    task_id VARCHAR,
    domain VARCHAR,
    row_idx INTEGER,
    PRIMARY KEY (task_id, domain, row_idx)
);
