-- is_success: the one definition of "100% Success": a reward (goals done / goals total, or a task's mean over
-- samples) counts when every goal is done; 1e-6 absorbs float rounding. run_scores and paired_rewards use it.
CREATE OR REPLACE MACRO is_success(reward) AS reward >= 1 - 1e-6
