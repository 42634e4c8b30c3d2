-- toolwoz.restaurant: one row per MultiWOZ restaurant, in restaurant_db.json order (row_idx).
-- Display columns keep the DB's text; k_* columns hold the normalised search keys (values.normalise);
-- raw is the DB row as the reference serves it (parity semantics).
CREATE TABLE toolwoz.restaurant (
    row_idx INTEGER PRIMARY KEY,
    id VARCHAR,
    name VARCHAR,
    address VARCHAR,
    area VARCHAR,
    food VARCHAR,
    introduction VARCHAR,
    phone VARCHAR,
    postcode VARCHAR,
    pricerange VARCHAR,
    signature VARCHAR,
    type VARCHAR,
    lat DOUBLE,
    lon DOUBLE,
    k_food VARCHAR,
    k_pricerange VARCHAR,
    k_name VARCHAR,
    k_area VARCHAR,
    raw JSON
);
