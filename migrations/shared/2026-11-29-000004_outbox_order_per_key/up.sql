-- Outbox ids follow commit order per key, whoever writes the rows.
--
-- A BIGSERIAL default is drawn at INSERT time, so two transactions that write
-- the same key without locking it can commit in the opposite order of their
-- ids. This trigger takes a transaction-scoped advisory lock on the key (in
-- the two-int key space, so it never meets the consumers' per-order locks)
-- and only then draws the id. A second writer of the same key waits at its
-- INSERT until the first committed, and so draws a larger id: for one key,
-- id order is commit order, and a row the relay can see has every earlier
-- row of its key visible already. Writers need not know any of this.
CREATE FUNCTION outbox_order_per_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1869767794, hashtext(NEW.msg_key));
    NEW.id := nextval(pg_get_serial_sequence(TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, 'id'));
    RETURN NEW;
END
$$;

CREATE TRIGGER outbox_order_per_key BEFORE INSERT ON outbox
    FOR EACH ROW EXECUTE FUNCTION outbox_order_per_key();
