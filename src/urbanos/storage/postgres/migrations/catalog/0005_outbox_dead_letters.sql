-- Dead letters of the notification outbox (run with search_path = urbanos): a change that a
-- subscription could not be matched against (subscription_id NULL: the change as a whole),
-- recorded in the transaction that consumes the change and retried with backoff by the node
-- that leads the job, until the retry yields its notifications.
CREATE TABLE IF NOT EXISTS outbox_dead_letters (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant text NOT NULL,
    subscription_id text,
    entity_id text NOT NULL,
    before jsonb,
    after jsonb,
    at text NOT NULL,
    attempts integer NOT NULL,
    next_at double precision NOT NULL,
    first_failed double precision NOT NULL,
    last_error text NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_dead_letters_due ON outbox_dead_letters (next_at, id);
-- One node at a time sends a subscription's notifications: claims look for the rows of the
-- same subscription that another node holds.
CREATE INDEX IF NOT EXISTS outbox_deliveries_claimed
    ON outbox_deliveries (tenant, subscription_id) WHERE claimed_by IS NOT NULL;
