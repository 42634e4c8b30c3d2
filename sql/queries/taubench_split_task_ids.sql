-- taubench_split_task_ids: the task ids of τ-bench domain $env's split $split in the order runs take them (index).
SELECT task_id
FROM taubench_tasks
WHERE domain = $env AND split = $split
ORDER BY idx
