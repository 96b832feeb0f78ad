-- Identifiers compare as bytes. Session ids, chat ids, message ids, organizations and
-- idempotency keys are identifiers, never text a person sorts, yet under the database's default
-- collation (en_US.UTF-8, C.UTF-8, ...) every index comparison of them goes through strcoll().
-- The claim, the completion and every state change insert into indexes keyed by them; a profile of
-- the drain benchmark had PostgreSQL spending a large share of its time in varstr_cmp. With
-- COLLATE "C" they compare with memcmp. Equality is unchanged (both collations are
-- deterministic); only the order of listings by these columns becomes byte order.
--
-- The types stay text, so no table is rewritten; the indexes on these columns are rebuilt.

ALTER TABLE wa_outbox.sessions
    ALTER COLUMN id  TYPE text COLLATE "C",
    ALTER COLUMN org TYPE text COLLATE "C";

ALTER TABLE wa_outbox.jobs
    ALTER COLUMN org             TYPE text COLLATE "C",
    ALTER COLUMN session_id      TYPE text COLLATE "C",
    ALTER COLUMN chat            TYPE text COLLATE "C",
    ALTER COLUMN wa_message_id   TYPE text COLLATE "C",
    ALTER COLUMN idempotency_key TYPE text COLLATE "C",
    ALTER COLUMN engine_key_id   TYPE text COLLATE "C";

ALTER TABLE wa_outbox.lanes
    ALTER COLUMN session_id TYPE text COLLATE "C",
    ALTER COLUMN chat       TYPE text COLLATE "C",
    ALTER COLUMN org        TYPE text COLLATE "C";

ALTER TABLE wa_outbox.events
    ALTER COLUMN org        TYPE text COLLATE "C",
    ALTER COLUMN session_id TYPE text COLLATE "C";

ALTER TABLE wa_outbox.receipts_pending
    ALTER COLUMN session_id TYPE text COLLATE "C",
    ALTER COLUMN key_id     TYPE text COLLATE "C";
