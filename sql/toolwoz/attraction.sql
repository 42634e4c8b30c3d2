-- toolwoz.attraction: one row per attraction, in attraction_db.json order (row_idx).
-- `entrance` is the DB's `entrance fee` (the API's return name).
CREATE TABLE toolwoz.attraction (
    row_idx INTEGER PRIMARY KEY,
    id VARCHAR,
    name VARCHAR,
    address VARCHAR,
    area VARCHAR,
    entrance VARCHAR,
    phone VARCHAR,
    postcode VARCHAR,
    pricerange VARCHAR,
    openhours VARCHAR,
    type VARCHAR,
    lat DOUBLE,
    lon DOUBLE,
    k_type VARCHAR,
    k_name VARCHAR,
    k_area VARCHAR,
    raw JSON
);
