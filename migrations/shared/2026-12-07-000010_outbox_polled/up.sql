-- The relay finds new rows by polling (a pause that starts at 1 ms and
-- doubles up to RELAY_POLL_INTERVAL_MS while the outbox is empty), no longer
-- by LISTEN/NOTIFY. A transaction that notified took a database-wide lock
-- from its pre-commit until its commit record was flushed, so every commit
-- that wrote an outbox row waited for the one before (measured: 3,126-3,321
-- against 6,819-6,832 write transactions/s without it), and `PREPARE
-- TRANSACTION` failed in such transactions.
DROP TRIGGER outbox_notify ON outbox;
DROP FUNCTION outbox_notify();
