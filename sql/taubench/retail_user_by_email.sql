-- retail_user_by_email: the first user (in τ-bench's order) of a branch's retail database whose email, lowercased, is $email
SELECT key
FROM taubench_rows($domain, 'users', $rollout_id, $path)
WHERE lower(doc ->> 'email') = $email
ORDER BY ord
LIMIT 1
