-- 0001_warehouse: the run, rollout and tree tables every rollout writes (append-only).
-- A rollout's rows are inserted in one transaction when it finishes: no half rollout is ever visible.

-- runs: one row per CLI action that produced data (kind harvest | eval | train).
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY,
    kind VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    status VARCHAR NOT NULL,            -- running | done | interrupted | failed
    config JSON NOT NULL,               -- every resolved setting of the command
    agent_model VARCHAR,                -- model path / Hub id, openai:MODEL, or teacher
    user_model VARCHAR,                 -- rule, or the LLM user's model
    backend VARCHAR,                    -- transformers | openai | teacher
    protocol VARCHAR,                   -- tools | react
    split VARCHAR,
    semantics VARCHAR,                  -- fixed | parity
    beam_size INTEGER,
    seed BIGINT,
    code_version VARCHAR,
    tools JSON                          -- tool schemas the agent was offered (NULL for react: in the prompt)
);

-- rollouts: one row per (run, task, sample), written when the rollout finishes.
CREATE TABLE IF NOT EXISTS rollouts (
    rollout_id VARCHAR PRIMARY KEY,     -- run_id/task_id/sample
    run_id VARCHAR NOT NULL,
    task_id VARCHAR NOT NULL,
    sample INTEGER NOT NULL,
    status VARCHAR NOT NULL,            -- done | failed
    reward DOUBLE NOT NULL,             -- goals_done / goals_total
    goals_total INTEGER NOT NULL,
    goals_done INTEGER NOT NULL,
    n_nodes INTEGER NOT NULL,
    n_steps INTEGER NOT NULL,
    end_reason VARCHAR,                 -- all_goals | user_ended | max_steps | no_live_leaf | error
    prompt_tokens BIGINT,
    completion_tokens BIGINT,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    error VARCHAR
);

-- nodes: one row per step of one branch (agent turn + the user's reply); the root holds the opening.
CREATE TABLE IF NOT EXISTS nodes (
    rollout_id VARCHAR NOT NULL,
    node_id INTEGER NOT NULL,
    parent_id INTEGER,
    path INTEGER[] NOT NULL,            -- node ids from the root to this node, inclusive
    depth INTEGER NOT NULL,
    created_step INTEGER NOT NULL,
    seed BIGINT,
    ended BOOLEAN NOT NULL,
    end_reason VARCHAR,                 -- user_ended | pruned | max_steps | context_overflow | error | all_goals
    is_successful BOOLEAN NOT NULL,
    is_golden BOOLEAN NOT NULL,
    error VARCHAR,
    PRIMARY KEY (rollout_id, node_id)
);

-- messages: only the messages a node added (deltas); a trajectory concatenates them along `path`.
CREATE TABLE IF NOT EXISTS messages (
    rollout_id VARCHAR NOT NULL,
    node_id INTEGER NOT NULL,
    pos INTEGER NOT NULL,
    role VARCHAR NOT NULL,
    content VARCHAR,
    tool_calls JSON,                    -- OpenAI tool_calls list as JSON text (arguments JSON strings)
    tool_call_id VARCHAR,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    latency_ms DOUBLE,
    PRIMARY KEY (rollout_id, node_id, pos)
);

-- tool_calls: every tool call a node made, with its result, in call order.
CREATE TABLE IF NOT EXISTS tool_calls (
    rollout_id VARCHAR NOT NULL,
    node_id INTEGER NOT NULL,
    pos INTEGER NOT NULL,               -- position of the tool result message in the node
    name VARCHAR,
    arguments JSON,
    semantics VARCHAR,
    ok BOOLEAN NOT NULL,
    error_kind VARCHAR,
    error VARCHAR,
    result JSON,
    n_rows INTEGER,
    latency_us BIGINT,
    PRIMARY KEY (rollout_id, node_id, pos)
);

-- rewards: every goal API matched by any node; credited marks the match the rollout collapsed onto.
CREATE TABLE IF NOT EXISTS rewards (
    rollout_id VARCHAR NOT NULL,
    node_id INTEGER NOT NULL,
    step INTEGER NOT NULL,
    goal VARCHAR NOT NULL,              -- api name, e.g. book_hotel
    domain VARCHAR NOT NULL,
    credited BOOLEAN NOT NULL,
    PRIMARY KEY (rollout_id, node_id, goal)
);
