-- airline_onestop_flights: τ-bench's search_onestop_flight over a branch's flights (base ⊕ its writes), pairs in τ-bench's loop order: a first flight from $origin, a second to $destination from where the first lands, leaving no earlier (text comparison, as τ-bench) than the first arrives, the first available on $date and the second on $date, or on $next_date when the first arrives "+1"; also every route pair whose next date is needed but NULL (τ-bench fails there) and, with $date NULL, every pair in time
WITH flights AS (
    SELECT ord, doc,
           doc ->> '$.origin' AS origin,
           doc ->> '$.destination' AS destination,
           doc ->> '$.scheduled_departure_time_est' AS departure,
           doc ->> '$.scheduled_arrival_time_est' AS arrival,
           json_transform(doc -> '$.dates', '"MAP(VARCHAR, STRUCT(status VARCHAR))"') AS dates
    FROM taubench_rows($domain, 'flights', $rollout_id, $path)
), pairs AS (
    SELECT f1.ord AS ord1, f2.ord AS ord2, f1.doc AS doc1, f2.doc AS doc2,
           contains(f1.arrival, '+1') AS next_day,
           NOT (f1.arrival > f2.departure) AS in_time,
           f1.dates[$date].status AS status1,
           f2.dates[CASE WHEN contains(f1.arrival, '+1') THEN $next_date ELSE $date END].status AS status2
    FROM flights f1 JOIN flights f2 ON f1.destination = f2.origin
    WHERE f1.origin = $origin AND f2.destination = $destination
)
SELECT doc1, doc2, next_day, in_time
FROM pairs
WHERE (next_day AND $next_date IS NULL)
   OR (in_time AND $date IS NULL)
   OR (in_time AND status1 = 'available' AND status2 = 'available')
ORDER BY ord1, ord2
