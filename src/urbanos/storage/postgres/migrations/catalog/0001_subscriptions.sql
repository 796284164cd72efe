-- Subscriptions of every tenant, in the catalog (run with search_path = urbanos, public):
-- a subscription may come before its tenant's first entity, and loading every index at
-- start reads one table. doc is json, not jsonb: the document keeps its key order.
-- The delivery counters have their own columns, so counting a delivery never rewrites
-- (or races with) the document. seq keeps creation order for paging.
CREATE TABLE IF NOT EXISTS subscriptions (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant text NOT NULL,
    id text NOT NULL,
    doc json NOT NULL,
    times_sent integer NOT NULL DEFAULT 0,
    times_failed integer NOT NULL DEFAULT 0,
    last_notification text,
    last_success text,
    last_failure text,
    last_status text,
    last_error text,
    UNIQUE (tenant, id)
);
