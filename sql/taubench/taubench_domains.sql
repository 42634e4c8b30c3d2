-- taubench_domains: one row per built τ-bench domain: the agent's policy (wiki.md), the tool schemas (tools.json, in order), the rules (rules.json) and where they were read from
CREATE TABLE IF NOT EXISTS taubench_domains (
    domain VARCHAR PRIMARY KEY,
    wiki VARCHAR NOT NULL,
    tools JSON NOT NULL,
    rules JSON NOT NULL,
    source VARCHAR NOT NULL
)
