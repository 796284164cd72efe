-- Context source registrations of every tenant, in the catalog (run with search_path =
-- urbanos, public), shared by every node of the database. doc is jsonb, for queries on its
-- members. The counters of requests forwarded to the source have their own columns, so
-- counting a request never rewrites (or races with) the document. seq keeps creation order.
CREATE TABLE IF NOT EXISTS registrations (
    seq bigserial PRIMARY KEY,
    tenant text NOT NULL,
    id text NOT NULL,
    doc jsonb NOT NULL,
    times_sent integer NOT NULL DEFAULT 0,
    times_failed integer NOT NULL DEFAULT 0,
    last_success text,
    last_failure text,
    status text,
    UNIQUE (tenant, id)
);
