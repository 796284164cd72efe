-- Access control in the catalog (run with search_path = urbanos, public): the grants of each
-- tenant (doc is core.policy.Grant.to_json), API keys (the SHA-256 of the secret, never the
-- secret), the OpenID Connect issuers each tenant trusts, and the audit log. seq keeps
-- insertion order. Times are canonical UTC strings, compared bytewise (COLLATE "C").
CREATE TABLE IF NOT EXISTS access_grants (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant text NOT NULL,
    id text NOT NULL,
    doc json NOT NULL,
    UNIQUE (tenant, id)
);
CREATE TABLE IF NOT EXISTS api_keys (
    seq bigint GENERATED ALWAYS AS IDENTITY,
    id text PRIMARY KEY,
    tenant text NOT NULL,
    role text NOT NULL,
    name text NOT NULL,
    secret_hash text NOT NULL,
    created_at text COLLATE "C" NOT NULL,
    expires_at text COLLATE "C",
    revoked_at text COLLATE "C",
    last_used_at text COLLATE "C",
    created_by text
);
CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys (tenant, seq);
CREATE TABLE IF NOT EXISTS oidc_issuers (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant text NOT NULL,
    url text NOT NULL,
    audience text,
    claims jsonb NOT NULL DEFAULT '{}',
    UNIQUE (tenant, url)
);
-- Append-only but for purges by time; entity_ids: the entities a write touched.
CREATE TABLE IF NOT EXISTS audit_log (
    seq bigserial PRIMARY KEY,
    time text COLLATE "C" NOT NULL,
    principal text NOT NULL,
    client text,
    tenant text NOT NULL,
    operation text COLLATE "C" NOT NULL,
    entity_ids text[] NOT NULL DEFAULT '{}',
    outcome text NOT NULL,
    status integer NOT NULL,
    request_id text,
    detail text
);
CREATE INDEX IF NOT EXISTS audit_log_tenant ON audit_log (tenant, seq);
CREATE INDEX IF NOT EXISTS audit_log_principal ON audit_log (principal, seq);
CREATE INDEX IF NOT EXISTS audit_log_time ON audit_log (time);
CREATE INDEX IF NOT EXISTS audit_log_entity_ids ON audit_log USING gin (entity_ids);
