-- actions_status (status) is the prefix of actions_expires_at (status,
-- expires_at), which answers every query by status as well. Each index is
-- another B-tree that every attempt's INSERT and every outcome's status
-- UPDATE must write inside the transaction the agent waits for (issue 15).
DROP INDEX IF EXISTS actions_status;
