-- tasks: the τ-bench tasks of one domain in split and index order
SELECT task_id, domain, split, idx, user_id, instruction, actions, outputs
FROM taubench_tasks
WHERE domain = $domain
ORDER BY split, idx
