-- The W3C tracestate beside the traceparent, so vendors' trace state
-- survives the hop through the outbox and the topic.
ALTER TABLE outbox ADD COLUMN tracestate TEXT;
