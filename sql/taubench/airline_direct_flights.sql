-- airline_direct_flights: τ-bench's search_direct_flight over a branch's flights (base ⊕ its writes), in τ-bench's order: the flights from $origin to $destination whose $date is available; with $date NULL (the agent gave no text date) every flight of the route, so the tool can reproduce τ-bench's outcome
SELECT doc
FROM taubench_rows($domain, 'flights', $rollout_id, $path)
WHERE doc ->> '$.origin' = $origin
  AND doc ->> '$.destination' = $destination
  AND ($date IS NULL
       OR json_transform(doc -> '$.dates', '"MAP(VARCHAR, STRUCT(status VARCHAR))"')[$date].status = 'available')
ORDER BY ord
