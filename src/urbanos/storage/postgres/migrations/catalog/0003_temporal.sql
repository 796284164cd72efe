-- Attribute history of every tenant, in the catalog (run with search_path = urbanos):
-- the same three tables as the SQLite store, times as integer microseconds. Instances are
-- appended in time order, so a BRIN index on the observation time serves retention scans
-- at almost no write cost; (series, observed_ts) serves the per-series range scans.
CREATE TABLE IF NOT EXISTS temporal_entities (
    pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant text NOT NULL,
    id text NOT NULL,
    types jsonb NOT NULL,
    scope jsonb,
    created_at text NOT NULL,
    modified_at text NOT NULL,
    deleted_at text,
    UNIQUE (tenant, id)
);
CREATE TABLE IF NOT EXISTS temporal_series (
    pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entity bigint NOT NULL REFERENCES temporal_entities (pk) ON DELETE CASCADE,
    attr text NOT NULL,
    dataset text NOT NULL,
    UNIQUE (entity, attr, dataset)
);
CREATE TABLE IF NOT EXISTS temporal_instances (
    pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    series bigint NOT NULL REFERENCES temporal_series (pk) ON DELETE CASCADE,
    observed_ts bigint,
    created_ts bigint NOT NULL,
    modified_ts bigint NOT NULL,
    deleted_ts bigint,
    num double precision,
    val text,
    doc text NOT NULL
);
CREATE INDEX IF NOT EXISTS temporal_instances_observed
    ON temporal_instances (series, observed_ts);
CREATE INDEX IF NOT EXISTS temporal_instances_observed_brin
    ON temporal_instances USING brin (observed_ts);
