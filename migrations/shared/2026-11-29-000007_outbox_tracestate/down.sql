ALTER TABLE outbox DROP COLUMN tracestate;
