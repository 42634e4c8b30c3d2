-- toolwoz_keys: the `fixed` search index, a temp table derived per connection from the domain tables (query.py).
-- One row per key: a domain and (param, value) pairs, a subset of some row's searchable k_* values or its uid alone,
-- with every row holding those values, so a request's equality constraints are ONE key (looked up by its MD5).
CREATE TEMP TABLE toolwoz_keys (
    key_hash UHUGEINT,     -- md5_number(key)
    key VARCHAR,           -- repr((domain, (param, value), ...)), pairs sorted by param (query.py `index_key`)
    row_ids INTEGER[],     -- the rows with these values, in DB order (row_idx)
    leave_mins INTEGER[],  -- their train times in minutes (NULL elsewhere), for `leaveAt` / `arriveBy` bounds
    arrive_mins INTEGER[]
);
