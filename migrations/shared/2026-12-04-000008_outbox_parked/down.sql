DROP INDEX outbox_parked_keys;
ALTER TABLE outbox DROP COLUMN parked_reason;
ALTER TABLE outbox DROP COLUMN parked_at;
