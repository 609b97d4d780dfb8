-- A compensation that arrives before its OrderCreated leaves a tombstone: a
-- CANCELLED delivery whose order details are not known yet. The late
-- OrderCreated fills them in and starts nothing.
ALTER TABLE deliveries
    ALTER COLUMN product_id DROP NOT NULL,
    ALTER COLUMN qty DROP NOT NULL,
    ALTER COLUMN customer_id DROP NOT NULL,
    ALTER COLUMN address DROP NOT NULL,
    ADD CONSTRAINT deliveries_details_known CHECK (
        status = 'CANCELLED'
        OR (product_id IS NOT NULL AND qty IS NOT NULL
            AND customer_id IS NOT NULL AND address IS NOT NULL)
    );
