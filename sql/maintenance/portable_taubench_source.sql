-- portable_taubench_source: a warehouse to share (`make example`): the τ-bench folder each domain was built from
-- keeps only its last name (`taubench`), not where it sat on the machine that built it.
UPDATE taubench_domains SET source = regexp_replace(source, '^.*/', '')
