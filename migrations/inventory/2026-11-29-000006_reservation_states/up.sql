-- A reservation says what happened to an order's stock: TAKEN, RELEASED
-- (given back once), or NEVER_TAKEN (a DeliveryCancelled arrived before its
-- DeliveryStarted; the tombstone stops the late action).
ALTER TABLE reservations
    ADD COLUMN status TEXT NOT NULL DEFAULT 'TAKEN'
        CHECK (status IN ('TAKEN', 'RELEASED', 'NEVER_TAKEN')),
    ALTER COLUMN product_id DROP NOT NULL,
    DROP CONSTRAINT reservations_qty_check;
UPDATE reservations SET status = 'RELEASED' WHERE released_at IS NOT NULL;
ALTER TABLE reservations
    ALTER COLUMN status DROP DEFAULT,
    ADD CONSTRAINT reservations_shape CHECK (
        CASE status
            WHEN 'NEVER_TAKEN' THEN product_id IS NULL AND qty = 0 AND released_at IS NOT NULL
            WHEN 'RELEASED' THEN product_id IS NOT NULL AND qty > 0 AND released_at IS NOT NULL
            ELSE product_id IS NOT NULL AND qty > 0 AND released_at IS NULL
        END
    );
