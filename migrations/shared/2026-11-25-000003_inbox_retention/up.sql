-- The inbox janitor deletes rows older than INBOX_RETENTION_SECS; this index
-- keeps that scan cheap however large the inbox grows.
CREATE INDEX inbox_received_at ON inbox (received_at);
