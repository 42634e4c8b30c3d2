-- taubench_retail_products: τ-bench retail products (products.json), one row per product with its variants; `doc` is the record as the JSON has it
CREATE TABLE IF NOT EXISTS taubench_retail_products (
    product_id VARCHAR PRIMARY KEY,
    ord INTEGER NOT NULL,
    name VARCHAR,
    variants STRUCT(item_id VARCHAR, available BOOLEAN, price DOUBLE)[],
    doc JSON NOT NULL
)
