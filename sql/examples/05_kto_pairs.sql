-- 05_kto_pairs: How much preference data does each harvest run yield? Per harvest run: KTO examples (desirable /
-- undesirable), prompts that have both (a contrastive pair), DPO pairs and SFT conversations, at the views'
-- default thresholds (change them with e.g. `-p min_reward 0.5`).
WITH kto_prompts AS (
    SELECT run_id, md5(to_json(prompt)::VARCHAR) AS prompt_key,
           count(*) FILTER (label) AS desirable, count(*) FILTER (NOT label) AS undesirable
    FROM kto
    GROUP BY run_id, prompt_key
),
kto_runs AS (
    SELECT run_id, sum(desirable)::INTEGER AS desirable, sum(undesirable)::INTEGER AS undesirable,
           count(*) FILTER (desirable > 0 AND undesirable > 0) AS paired_prompts
    FROM kto_prompts
    GROUP BY run_id
),
dpo_runs AS (SELECT run_id, count(*) AS pairs FROM dpo GROUP BY run_id),
sft_runs AS (SELECT run_id, count(*) AS conversations FROM sft GROUP BY run_id)
SELECT
    regexp_extract(r.agent_model, '[^/]+$') AS agent,        -- teacher, or the model folder's name
    r.beam,                                                  -- JOSH beam width
    coalesce(k.desirable, 0) AS kto_desirable,               -- assistant turns on golden paths
    coalesce(k.undesirable, 0) AS kto_undesirable,           -- failed siblings' turns at the same prompts
    coalesce(k.paired_prompts, 0) AS kto_paired_prompts,     -- prompts with both labels
    coalesce(d.pairs, 0) AS dpo_pairs,                       -- (chosen, rejected) rows
    coalesce(s.conversations, 0) AS sft_rows                 -- golden conversations
FROM runs AS r
LEFT JOIN kto_runs AS k ON k.run_id = r.run_id
LEFT JOIN dpo_runs AS d ON d.run_id = r.run_id
LEFT JOIN sft_runs AS s ON s.run_id = r.run_id
WHERE r.kind = 'harvest'
ORDER BY r.created_at
