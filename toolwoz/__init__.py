"""ToolWOZ on DuckDB: MultiWOZ loading, tasks and ground truth, tool calls as bound queries, rewards."""
