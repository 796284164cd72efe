-- Transient entities (core.expiry): the sweeper finds the documents whose earliest
-- expiresAt (doc's nextExpiry, canonical text) is due; only transient entities are indexed.
CREATE INDEX IF NOT EXISTS entities_expiry ON entities ((doc ->> 'nextExpiry'))
    WHERE doc ? 'nextExpiry';
