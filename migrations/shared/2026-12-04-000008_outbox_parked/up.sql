-- A row the broker can never take (too large, a topic that does not exist)
-- is parked by the relay after a bounded number of tries: marked with when
-- and why, and left out of every later batch, together with the later rows
-- of its key (so per-key order holds), until an operator retries it
-- (`outbox-relay parked retry`). Everything else keeps flowing.
ALTER TABLE outbox ADD COLUMN parked_at TIMESTAMPTZ;
ALTER TABLE outbox ADD COLUMN parked_reason TEXT;
-- The relay asks, for every batch, which keys have a parked row.
CREATE INDEX outbox_parked_keys ON outbox (msg_key) WHERE parked_at IS NOT NULL;
