-- insert_writes: the rows of one call's writes ($tbls, $keys, ... one entry per row) at (rollout, node, pos), for INSERT INTO taubench_writes
SELECT $rollout_id AS rollout_id, $node_id AS node_id, $pos AS pos, unnest(range(len($keys::VARCHAR[]))) AS seq,
       unnest($tbls::VARCHAR[]) AS tbl,
       unnest($keys::VARCHAR[]) AS key, unnest($befores::JSON[]) AS before, unnest($afters::JSON[]) AS after,
       unnest($before_hashes::VARCHAR[]) AS before_hash, unnest($after_hashes::VARCHAR[]) AS after_hash
