-- retail_users_by_first_name: the users (in τ-bench's order) of a branch's retail database whose first name, lowercased, is $first_name, with last name and zip
SELECT key, doc ->> '$.name.last_name' AS last_name, doc -> '$.address.zip' AS zip
FROM taubench_rows($domain, 'users', $rollout_id, $path)
WHERE lower(doc ->> '$.name.first_name') = $first_name
ORDER BY ord
