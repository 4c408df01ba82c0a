-- Audit records name the credential a call was made with (issue 11):
-- key:<id> for an API key, jwt:<jti> or jwt-client:<client_id> for an OAuth
-- access token; never the secret. Empty for stdio, for a person's approval,
-- and for records written before the column existed, which leaves their
-- hashes unchanged (see Record.hashed).
ALTER TABLE audit ADD COLUMN credential TEXT NOT NULL DEFAULT '';
