-- retail_product_types: every product's name and id in a branch's retail database, in τ-bench's order
SELECT doc ->> 'name' AS name, doc -> 'product_id' AS product_id
FROM taubench_rows($domain, 'products', $rollout_id, $path)
ORDER BY ord
