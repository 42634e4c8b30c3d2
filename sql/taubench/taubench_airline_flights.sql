-- taubench_airline_flights: τ-bench airline flights (flights.json), one row per flight number with its dates; `doc` is the record as the JSON has it
CREATE TABLE IF NOT EXISTS taubench_airline_flights (
    flight_number VARCHAR PRIMARY KEY,
    ord INTEGER NOT NULL,
    origin VARCHAR,
    destination VARCHAR,
    scheduled_departure_time_est VARCHAR,
    scheduled_arrival_time_est VARCHAR,
    dates STRUCT(date VARCHAR, status VARCHAR)[],
    doc JSON NOT NULL
)
