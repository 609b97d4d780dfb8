CREATE TABLE inventories (
    id           BIGSERIAL PRIMARY KEY,
    product_name TEXT        NOT NULL,
    stock        BIGINT      NOT NULL CHECK (stock >= 0),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Stock taken for an order. Giving it back sets released_at, once.
CREATE TABLE reservations (
    order_id    BIGINT      PRIMARY KEY,
    product_id  BIGINT      NOT NULL REFERENCES inventories (id),
    qty         BIGINT      NOT NULL CHECK (qty > 0),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    released_at TIMESTAMPTZ
);
