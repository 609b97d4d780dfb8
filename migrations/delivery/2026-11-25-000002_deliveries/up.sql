-- One delivery per order: the order id is the key.
CREATE TABLE deliveries (
    order_id    BIGINT      PRIMARY KEY,
    product_id  BIGINT      NOT NULL,
    qty         BIGINT      NOT NULL,
    customer_id BIGINT      NOT NULL,
    address     TEXT        NOT NULL,
    status      TEXT        NOT NULL CHECK (status IN ('STARTED', 'FAILED', 'CANCELLED')),
    reason      TEXT        NOT NULL DEFAULT '',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
