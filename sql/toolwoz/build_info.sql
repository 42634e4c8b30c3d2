-- toolwoz.build_info: one row describing the last `factory toolwoz build` (source folder, counts, time).
CREATE TABLE toolwoz.build_info (
    source VARCHAR,
    n_dialogues INTEGER,
    n_tasks INTEGER,
    built_at TIMESTAMP,
    code_version VARCHAR
);
