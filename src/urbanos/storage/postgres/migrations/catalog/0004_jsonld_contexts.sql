-- The @context registry (/jsonldContexts, clause 5.13) of every tenant, in the catalog (run
-- with search_path = urbanos, public), so every node lists, serves and deletes the same
-- entries. document is json, not jsonb: a served @context keeps its key order. A Cached
-- entry is unique per (tenant, url): a node downloading a URL another node already keeps
-- refreshes that entry instead of adding a second one.
CREATE TABLE IF NOT EXISTS jsonld_contexts (
    tenant text NOT NULL,
    local_id text NOT NULL,
    kind text NOT NULL,
    document json NOT NULL,
    created_at timestamptz NOT NULL,
    url text,
    expires_at timestamptz,
    last_usage timestamptz,
    hits bigint NOT NULL DEFAULT 0,
    key bytea,
    PRIMARY KEY (tenant, local_id)
);
CREATE UNIQUE INDEX IF NOT EXISTS jsonld_contexts_cached_url
    ON jsonld_contexts (tenant, url) WHERE kind = 'Cached';
