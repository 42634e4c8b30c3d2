-- tasks: one row per ToolWOZ task (a MultiWOZ dialogue without taxi/police/hospital goals).
-- split is the base split (test, val, train); splits lists every named split holding the task
-- (test_full, test, val, val_boot, val_harvest, train). ground_truth follows reference §1.4.
CREATE TABLE IF NOT EXISTS tasks (
    task_id VARCHAR PRIMARY KEY,
    split VARCHAR NOT NULL,
    splits VARCHAR[] NOT NULL,
    domains VARCHAR[] NOT NULL,
    goal JSON NOT NULL,
    ground_truth JSON NOT NULL,
    n_goals INTEGER NOT NULL,
    message VARCHAR[] NOT NULL
);
