-- chat_messages: one row per stored message, shaped as a TRL / OpenAI chat message struct.
-- tool_calls become a list of {id, type, function: {name, arguments}} with arguments kept as JSON text
-- (never a struct: Arrow would union the keys of different tools and fill them with nulls).
CREATE OR REPLACE VIEW chat_messages AS
SELECT
    m.rollout_id,                 -- the rollout
    m.node_id,                    -- the node that added the message
    m.pos,                        -- position within the node
    m.role,                       -- system | user | assistant | tool
    {
        'role': m.role,
        'content': coalesce(m.content, ''),
        'tool_calls': from_json(m.tool_calls, '[{"id": "VARCHAR", "type": "VARCHAR", "function": {"name": "VARCHAR", "arguments": "VARCHAR"}}]'),
        'tool_call_id': m.tool_call_id
    } AS message                  -- the message as TRL reads it
FROM messages AS m
