CREATE OR REPLACE FUNCTION outbox_order_per_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1869767794, hashtext(NEW.msg_key));
    NEW.id := nextval(pg_get_serial_sequence(TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, 'id'));
    RETURN NEW;
END
$$;
CREATE INDEX outbox_parked_keys ON outbox (msg_key) WHERE parked_at IS NOT NULL;
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
DROP INDEX outbox_heads;
DROP INDEX outbox_waiting_keys;
ALTER TABLE outbox DROP COLUMN head;
