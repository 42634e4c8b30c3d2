-- split_task_ids: the task ids of split $split in the order runs take them (sorted), for slicing a split.
SELECT task_id
FROM tasks
WHERE list_contains(splits, $split)
ORDER BY task_id
