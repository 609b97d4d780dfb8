CREATE TABLE orders (
    id           BIGSERIAL PRIMARY KEY,
    customer_id  BIGINT      NOT NULL,
    product_id   BIGINT      NOT NULL,
    product_name TEXT        NOT NULL,
    qty          BIGINT      NOT NULL CHECK (qty > 0),
    address      TEXT        NOT NULL,
    status       TEXT        NOT NULL CHECK (status IN ('PENDING', 'APPROVED', 'REJECTED', 'CANCELLED')),
    reason       TEXT        NOT NULL DEFAULT '',
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
