-- taubench_retail_orders: τ-bench retail orders (orders.json), one row per order; `doc` is the record as the JSON has it, `ord` its position there
CREATE TABLE IF NOT EXISTS taubench_retail_orders (
    order_id VARCHAR PRIMARY KEY,
    ord INTEGER NOT NULL,
    user_id VARCHAR,
    status VARCHAR,
    address STRUCT(address1 VARCHAR, address2 VARCHAR, city VARCHAR, country VARCHAR, state VARCHAR, zip VARCHAR),
    items STRUCT(name VARCHAR, product_id VARCHAR, item_id VARCHAR, price DOUBLE)[],
    payment_history STRUCT(transaction_type VARCHAR, amount DOUBLE, payment_method_id VARCHAR)[],
    doc JSON NOT NULL
)
