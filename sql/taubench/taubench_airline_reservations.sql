-- taubench_airline_reservations: τ-bench airline reservations (reservations.json), one row per reservation; `doc` is the record as the JSON has it
CREATE TABLE IF NOT EXISTS taubench_airline_reservations (
    reservation_id VARCHAR PRIMARY KEY,
    ord INTEGER NOT NULL,
    user_id VARCHAR,
    origin VARCHAR,
    destination VARCHAR,
    flight_type VARCHAR,
    cabin VARCHAR,
    flights STRUCT(origin VARCHAR, destination VARCHAR, flight_number VARCHAR, date VARCHAR, price DOUBLE)[],
    passengers STRUCT(first_name VARCHAR, last_name VARCHAR, dob VARCHAR)[],
    created_at VARCHAR,
    total_baggages INTEGER,
    nonfree_baggages INTEGER,
    insurance VARCHAR,
    doc JSON NOT NULL
)
