-- Context source registration subscriptions (clause 5.11) share the subscriptions table and
-- its delivery counters with entity subscriptions; kind tells them apart ('entity' or
-- 'csource'). Ids stay unique per tenant over both kinds: a delivery names one subscription.
ALTER TABLE subscriptions ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'entity';
