-- The notification outbox of every tenant, in the catalog (run with search_path = urbanos).
-- outbox_changes: one row per entity write, inserted by a write hook in the write's own
-- transaction; outbox_deliveries: notifications to send, deleted once acknowledged.
-- claimed_by is the id of the node working on a row; a node that died no longer holds its
-- liveness lock (storage/postgres/listen.py), and its claims are taken over.
CREATE TABLE IF NOT EXISTS outbox_changes (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant text NOT NULL,
    entity_id text NOT NULL,
    before jsonb,
    after jsonb,
    at text NOT NULL,
    claimed_by bigint
);
CREATE TABLE IF NOT EXISTS outbox_deliveries (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant text NOT NULL,
    subscription_id text NOT NULL,
    lane text NOT NULL,
    uri text NOT NULL,
    headers json NOT NULL,
    payload bytea NOT NULL,
    qos integer NOT NULL DEFAULT 0,
    mqtt_version text NOT NULL DEFAULT 'mqtt5.0',
    claimed_by bigint,
    attempts integer NOT NULL DEFAULT 0,
    next_at double precision NOT NULL,
    last_error text
);
CREATE INDEX IF NOT EXISTS outbox_deliveries_due ON outbox_deliveries (next_at, id);
