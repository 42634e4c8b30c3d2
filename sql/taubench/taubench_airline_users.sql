-- taubench_airline_users: τ-bench airline users (users.json), one row per user; `doc` is the record as the JSON has it, `ord` its position there
CREATE TABLE IF NOT EXISTS taubench_airline_users (
    user_id VARCHAR PRIMARY KEY,
    ord INTEGER NOT NULL,
    first_name VARCHAR,
    last_name VARCHAR,
    email VARCHAR,
    dob VARCHAR,
    membership VARCHAR,
    payment_method_ids VARCHAR[],
    reservations VARCHAR[],
    doc JSON NOT NULL
)
