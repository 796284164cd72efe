-- One row per number or string an attribute instance holds (storage/index_values.py): a
-- superset filter for q comparisons, so that type + q reads an index range instead of
-- evaluating a jsonpath on every entity of the type. Rows of entities written before this
-- migration are extracted here with jsonpath; ``strict $.**`` yields every nested scalar,
-- a superset of what the broker indexes on writes, which is safe for a superset filter.
CREATE TABLE IF NOT EXISTS attr_values (
    pk bigint NOT NULL REFERENCES entities (pk) ON DELETE CASCADE,
    attr text NOT NULL,
    num double precision,
    str text
);
INSERT INTO attr_values (pk, attr, num, str)
SELECT e.pk, a.key,
       CASE WHEN jsonb_typeof(s) = 'number' THEN (s #>> '{}')::double precision END,
       CASE WHEN jsonb_typeof(s) = 'string' THEN s #>> '{}' END
FROM entities e
CROSS JOIN LATERAL jsonb_each(e.doc -> 'attrs') a
CROSS JOIN LATERAL jsonb_array_elements(a.value) i
CROSS JOIN LATERAL unnest(ARRAY['value', 'object', 'vocab', 'json', 'valueList', 'objectList',
                               'languageMap']) m
CROSS JOIN LATERAL jsonb_path_query(i -> m, 'strict $.**') s
WHERE jsonb_typeof(i) = 'object' AND i ? m AND i ->> 'type' IS DISTINCT FROM 'GeoProperty'
  AND jsonb_typeof(s) IN ('number', 'string');
CREATE INDEX IF NOT EXISTS attr_values_num ON attr_values (attr, num, pk);
CREATE INDEX IF NOT EXISTS attr_values_str ON attr_values (attr, str, pk);
CREATE INDEX IF NOT EXISTS attr_values_pk ON attr_values (pk);
