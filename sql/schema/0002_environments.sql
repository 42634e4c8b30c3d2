-- 0002_environments: runs in more than one environment (ToolWOZ, τ-bench retail and airline), whose tools may
-- write, and what a user simulator left unread. Old warehouses migrate on open: their runs were ToolWOZ runs.

-- runs.env: the environment (`--env`) of an eval or harvest run; NULL for training runs.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS env VARCHAR;
UPDATE runs SET env = 'toolwoz' WHERE env IS NULL AND kind IN ('harvest', 'eval');

-- rollouts.episode_reward: the environment's own reward of the conversation the rollout ends with (τ-bench:
-- 1.0 when its final database equals the gold actions' and every required output was said); NULL for ToolWOZ,
-- whose reward is the share of goals credited (`reward`).
ALTER TABLE rollouts ADD COLUMN IF NOT EXISTS episode_reward DOUBLE;

-- state_changes: every write a tool call made, as the row's version before and after, keyed by the branch
-- (rollout, node) and the call's position in the node (tool_calls.pos). A branch's database is the base tables
-- overlaid with the writes of the nodes on its path; siblings never see each other's.
CREATE TABLE IF NOT EXISTS state_changes (
    rollout_id VARCHAR NOT NULL,
    node_id INTEGER NOT NULL,
    pos INTEGER NOT NULL,               -- the tool result message's position in the node (tool_calls.pos)
    seq INTEGER NOT NULL,               -- order of the call's writes
    table_name VARCHAR NOT NULL,        -- e.g. orders, users, reservations
    key VARCHAR NOT NULL,               -- the row's id: order_id, user_id, reservation_id
    before JSON,                        -- NULL: the call created the row
    after JSON,                         -- NULL: the call deleted the row
    PRIMARY KEY (rollout_id, node_id, pos, seq)
);

-- messages.unread_chars: on a user message, how many characters of the agent's replies since the user's previous
-- message the user simulator did not read (it reads the first 4000 of each: search/josh.py USER_READS); NULL: all.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS unread_chars INTEGER;
