-- taubench_retail_users: τ-bench retail users (users.json), one row per user; `doc` is the record as the JSON has it, `ord` its position there
CREATE TABLE IF NOT EXISTS taubench_retail_users (
    user_id VARCHAR PRIMARY KEY,
    ord INTEGER NOT NULL,
    first_name VARCHAR,
    last_name VARCHAR,
    email VARCHAR,
    zip VARCHAR,
    address STRUCT(address1 VARCHAR, address2 VARCHAR, city VARCHAR, country VARCHAR, province VARCHAR, zip VARCHAR),
    payment_method_ids VARCHAR[],
    orders VARCHAR[],
    doc JSON NOT NULL
)
