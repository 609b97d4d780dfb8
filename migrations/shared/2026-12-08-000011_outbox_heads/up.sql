-- Fair to every key: the relay fetches the heads of keys, not the oldest
-- rows. A row is its key's head when no earlier row of its key waits; the
-- ordering trigger decides it under the key's lock, and the relay makes the
-- next row the head when it settles the one ahead (under the same lock,
-- taken without waiting). The fetch walks the partial index of heads only,
-- so one key with a million waiting rows, or a parked key and the rows
-- behind it, are never in its path (docs/relay.md, "Fair to every key").
ALTER TABLE outbox ADD COLUMN head BOOLEAN NOT NULL DEFAULT false;

-- Every waiting row by key, for the trigger's check, the relay's promotion
-- and the fetch's guard; and the heads, for the fetch.
CREATE INDEX outbox_waiting_keys ON outbox (msg_key, id) WHERE published_at IS NULL;
CREATE INDEX outbox_heads ON outbox (id) WHERE head AND published_at IS NULL AND parked_at IS NULL;
-- The fetch no longer walks every waiting row nor asks for parked keys.
DROP INDEX outbox_unpublished;
DROP INDEX outbox_parked_keys;

-- The rows already waiting: each key's first becomes its head.
UPDATE outbox SET head = true
 WHERE id IN (SELECT min(id) FROM outbox WHERE published_at IS NULL GROUP BY msg_key);

CREATE OR REPLACE FUNCTION outbox_order_per_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1869767794, hashtext(NEW.msg_key));
    NEW.id := nextval(pg_get_serial_sequence(TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, 'id'));
    -- Under the key's lock, in a statement of its own: its snapshot sees
    -- every earlier row of the key, and whether the relay settled it. The
    -- row comparison walks outbox_waiting_keys from (key, least) whatever
    -- the statistics say (an equality on msg_key was planned as a walk of
    -- the table when they held one key).
    NEW.head := (SELECT CASE WHEN w.msg_key = NEW.msg_key THEN 1 END FROM outbox w
                  WHERE (w.msg_key, w.id) >= (NEW.msg_key, '-9223372036854775808'::int8)
                    AND w.published_at IS NULL
                  ORDER BY w.msg_key, w.id LIMIT 1) IS NULL;
    RETURN NEW;
END
$$;
