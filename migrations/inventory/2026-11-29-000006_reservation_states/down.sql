DELETE FROM reservations WHERE status = 'NEVER_TAKEN';
ALTER TABLE reservations
    DROP CONSTRAINT reservations_shape,
    DROP COLUMN status,
    ALTER COLUMN product_id SET NOT NULL,
    ADD CONSTRAINT reservations_qty_check CHECK (qty > 0);
