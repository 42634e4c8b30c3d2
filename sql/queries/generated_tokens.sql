-- generated_tokens: the tokens a run's finished rollouts generated, over every branch (what a harvest cost).
-- Parameter $run_id.
SELECT coalesce(sum(completion_tokens), 0) AS generated_tokens
FROM rollouts
WHERE run_id = $run_id AND status = 'done'
