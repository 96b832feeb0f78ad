-- When the last attempt that may have reached WhatsApp was given up: it timed out, or its worker
-- died or shut down mid-dispatch. Its request may still be on its way to the engine (in the
-- network, queued at the engine, or sent by a process that was paused and resumed). An engine
-- that chooses its own message ids (WAHA) cannot drop a second copy, and a look for the message
-- before the first one lands finds nothing: so a send that may have arrived is looked for only
-- once the request given up on would have landed (the worker's request timeout + 5 s after this
-- time, as the dispatch lock's TTL). Set by the completion with maybe_sent; NULL on rows from
-- before this migration, whose ambiguity is long past.
ALTER TABLE wa_outbox.jobs ADD COLUMN maybe_sent_at timestamptz;
