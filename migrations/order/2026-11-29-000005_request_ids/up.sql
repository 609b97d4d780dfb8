-- Idempotency keys of PlaceOrder and CancelOrder (AIP-155 request_id),
-- written in the same transaction as the order they created or cancelled.
CREATE TABLE request_ids (
    request_id  TEXT        PRIMARY KEY,
    method      TEXT        NOT NULL CHECK (method IN ('PlaceOrder', 'CancelOrder')),
    -- The request's fields as validated, to tell a retry from a different
    -- request that reused the id.
    fingerprint TEXT        NOT NULL,
    order_id    BIGINT      NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
