-- The event stream's cursor becomes (tx, id): the order in which events become visible.
--
-- 0001 read events in id order, keeping only those whose transaction is older than every one still
-- running. That skips an event: transaction A (xid 105) takes event id 10 and is still open while
-- transaction B (xid 104, assigned earlier by its UPDATE of the jobs) inserts id 11 and commits. A
-- reader sees 11 (104 is older than every running transaction), moves its cursor to 11, and never
-- returns 10 once A commits. Two workers completing batches at once do exactly this.
--
-- In (tx, id) order the rows with tx < xmin are a settled prefix: each is committed (or gone), and
-- every event still to come belongs to a transaction at or after xmin, so it sorts after the whole
-- prefix. A reader that resumes after the last (tx, id) it returned misses nothing and repeats
-- nothing. The cost stays what it was: a write transaction open anywhere in the cluster holds the
-- stream back (never loses an event) until it ends.

DROP FUNCTION wa_outbox.events_after(text, bigint, integer);
DROP INDEX wa_outbox.events_org;
CREATE INDEX events_position ON wa_outbox.events (tx, id);
CREATE INDEX events_org_position ON wa_outbox.events (org, tx, id);

-- Events after a cursor, in (tx, id) order, never skipping one that commits late. p_org NULL: all
-- organizations (the API's hub reads once for all of its clients).
CREATE FUNCTION wa_outbox.events_after(p_org text, p_after_tx xid8, p_after_id bigint, p_limit integer DEFAULT 500)
RETURNS SETOF wa_outbox.events LANGUAGE sql STABLE AS $$
    SELECT e.* FROM wa_outbox.events e
    WHERE (p_org IS NULL OR e.org = p_org)
      AND (e.tx, e.id) > (p_after_tx, p_after_id)
      AND e.tx < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY e.tx, e.id
    LIMIT p_limit
$$;

-- The cursor of the last settled event: where a reader starts to see only what comes next.
-- ('0', 0) for an empty log.
CREATE FUNCTION wa_outbox.events_head(OUT tx xid8, OUT id bigint) LANGUAGE sql STABLE AS $$
    SELECT coalesce(max(h.tx), '0'::xid8), coalesce(max(h.id), 0) FROM (
        SELECT e.tx, e.id FROM wa_outbox.events e
        WHERE e.tx < pg_snapshot_xmin(pg_current_snapshot())
        ORDER BY e.tx DESC, e.id DESC
        LIMIT 1
    ) h
$$;

-- The cursor of event p_id, which a client names (Last-Event-ID) to resume after it. 0 is the
-- start of the log. An id the log no longer holds (pruned) resumes with the events after it in id
-- terms, from the first transaction that wrote one; if there are none yet, from the head.
CREATE FUNCTION wa_outbox.event_cursor(p_org text, p_id bigint, OUT tx xid8, OUT id bigint)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_id <= 0 THEN
        tx := '0'; id := 0;
        RETURN;
    END IF;
    SELECT e.tx, e.id INTO tx, id FROM wa_outbox.events e
    WHERE e.id = p_id AND (p_org IS NULL OR e.org = p_org);
    IF FOUND THEN RETURN; END IF;
    SELECT e.tx, p_id INTO tx, id FROM wa_outbox.events e
    WHERE e.id > p_id AND (p_org IS NULL OR e.org = p_org)
    ORDER BY e.tx LIMIT 1;
    IF FOUND THEN RETURN; END IF;
    SELECT h.tx, h.id INTO tx, id FROM wa_outbox.events_head() h;
END $$;
