-- toolwoz.train: one row per train run (trainID is not unique across days), in train_db.json order.
-- Times stay zero-padded HH:MM text (as served) plus minutes after midnight for `fixed` comparisons.
CREATE TABLE toolwoz.train (
    row_idx INTEGER PRIMARY KEY,
    trainID VARCHAR,
    arriveBy VARCHAR,
    day VARCHAR,
    departure VARCHAR,
    destination VARCHAR,
    duration VARCHAR,
    leaveAt VARCHAR,
    price VARCHAR,
    leave_min INTEGER,
    arrive_min INTEGER,
    k_trainID VARCHAR,
    k_destination VARCHAR,
    k_day VARCHAR,
    k_departure VARCHAR,
    raw JSON
);
