-- Snapshots (clause 5.16) of every tenant, in the catalog (run with search_path = urbanos,
-- public): doc is the Snapshot resource, entities the frozen copy (stored form), written
-- once when the snapshot is filled. seq keeps creation order.
CREATE TABLE IF NOT EXISTS snapshots (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant text NOT NULL,
    id text NOT NULL,
    doc json NOT NULL,
    entities jsonb NOT NULL DEFAULT '[]',
    UNIQUE (tenant, id)
);
