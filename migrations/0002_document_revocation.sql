-- Revocation of a completed letter by the application that submitted it: the document's status
-- becomes 'revoked' and these record when (epoch milliseconds, like every time here) and why.
ALTER TABLE documents ADD COLUMN revoked_at BIGINT;
ALTER TABLE documents ADD COLUMN revocation_reason TEXT;
