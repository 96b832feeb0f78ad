-- WAHA's ack -1 (ERROR): after `sent`, the engine reports that the message was not delivered.
-- Receipt 3 is that state. It is final: it moves forward from any other receipt, and nothing moves
-- it on, so its `undelivered` event is written once and a repeated or later receipt writes nothing.
-- The events before it (`sent`, perhaps `delivered`) stay.
ALTER TABLE wa_outbox.jobs DROP CONSTRAINT jobs_receipt_check;
ALTER TABLE wa_outbox.jobs ADD CONSTRAINT jobs_receipt_check CHECK (receipt BETWEEN 0 AND 3);
