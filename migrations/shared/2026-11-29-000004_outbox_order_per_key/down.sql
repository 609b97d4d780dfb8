DROP TRIGGER outbox_order_per_key ON outbox;
DROP FUNCTION outbox_order_per_key();
