-- show_messages: one row per message one rollout's nodes added (deltas: a node's conversation is its path's
-- messages in order). Columns: node_id, pos, role, content, tool_calls (JSON text), tool_call_id,
-- completion_tokens. Parameter $rollout_id.
SELECT
    node_id,             -- the node that added the message
    pos,                 -- position within the node
    role,                -- system | user | assistant | tool
    content,             -- the text
    tool_calls,          -- OpenAI tool_calls list as JSON text
    tool_call_id,        -- the call a tool message answers
    completion_tokens    -- tokens generated for an assistant message
FROM messages
WHERE rollout_id = $rollout_id
ORDER BY node_id, pos
