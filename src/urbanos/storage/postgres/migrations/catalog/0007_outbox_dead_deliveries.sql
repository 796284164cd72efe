-- Notifications not delivered become dead letters too (run with search_path = urbanos):
-- kind 'matching' is a change whose matching failed (entity_id .. at), retried at next_at;
-- kind 'delivery' is a notification whose sends were exhausted or refused, moved here from
-- outbox_deliveries in one transaction with what would be sent (lane .. mqtt_version),
-- next_at and first_failed being when it was given up. Those wait for an operator.
ALTER TABLE outbox_dead_letters
    ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'matching',
    ADD COLUMN IF NOT EXISTS lane text,
    ADD COLUMN IF NOT EXISTS uri text,
    ADD COLUMN IF NOT EXISTS headers json,
    ADD COLUMN IF NOT EXISTS payload bytea,
    ADD COLUMN IF NOT EXISTS qos integer,
    ADD COLUMN IF NOT EXISTS mqtt_version text,
    ALTER COLUMN entity_id DROP NOT NULL,
    ALTER COLUMN at DROP NOT NULL;
-- the automatic retries look at matching ones only
DROP INDEX IF EXISTS outbox_dead_letters_due;
CREATE INDEX IF NOT EXISTS outbox_dead_letters_due_matching ON outbox_dead_letters (next_at, id)
    WHERE kind = 'matching';
