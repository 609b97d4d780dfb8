DELETE FROM deliveries WHERE product_id IS NULL;
ALTER TABLE deliveries
    DROP CONSTRAINT deliveries_details_known,
    ALTER COLUMN product_id SET NOT NULL,
    ALTER COLUMN qty SET NOT NULL,
    ALTER COLUMN customer_id SET NOT NULL,
    ALTER COLUMN address SET NOT NULL;
