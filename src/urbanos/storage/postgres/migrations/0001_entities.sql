-- Entities of one tenant; run with search_path = <tenant schema>, public.
-- doc is the stored form (core.model); types and attrs repeat its type list and attribute
-- names as arrays so GIN indexes answer type= and attrs= without reading documents.
CREATE TABLE IF NOT EXISTS entities (
    pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id text NOT NULL UNIQUE,
    types text[] NOT NULL,
    attrs text[] NOT NULL,
    doc jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS entities_types ON entities USING gin (types);
CREATE INDEX IF NOT EXISTS entities_attrs ON entities USING gin (attrs);

-- One row per GeoProperty instance with a valid geometry. geom (SRID 4326, planar lon/lat
-- like core.geo) serves bounding-box and topological prefilters; point holds Point values as
-- geography, for ST_DWithin in metres. valid: safe for exact GEOS predicates (a valid
-- geometry, not a collection); other rows are narrowed by bounding box only.
CREATE TABLE IF NOT EXISTS geo_values (
    pk bigint NOT NULL REFERENCES entities (pk) ON DELETE CASCADE,
    attr text NOT NULL,
    geom geometry NOT NULL,
    point geography(Point, 4326),
    valid boolean NOT NULL
);
CREATE INDEX IF NOT EXISTS geo_values_pk ON geo_values (pk);
CREATE INDEX IF NOT EXISTS geo_values_geom ON geo_values USING gist (geom);
CREATE INDEX IF NOT EXISTS geo_values_point ON geo_values USING gist (point);
