-- API keys: the credentials of scripts and services calling the gateway API. A key is shown once,
-- at creation; only its visible prefix and the SHA-256 of the whole key are kept. The key is 256
-- random bits, so a fast hash is enough (no password stretching: nothing to guess), and it keeps
-- verification to one index lookup and one digest per request.
CREATE TABLE wa_outbox.api_keys (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    org          text NOT NULL CHECK (org <> ''),
    name         text NOT NULL CHECK (name <> ''),
    -- The visible part, e.g. wak_live_ab12cd34: how a key is found, listed and named in logs.
    prefix       text NOT NULL UNIQUE,
    -- SHA-256 of the whole key (prefix, separator and secret).
    secret_hash  bytea NOT NULL CHECK (octet_length(secret_hash) = 32),
    -- The gateway capabilities the key carries.
    permissions  text[] NOT NULL CHECK (cardinality(permissions) > 0 AND permissions <@ ARRAY['send', 'read', 'operate']),
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Written at most once a minute per key, so a busy key does not write on every request.
    last_used_at timestamptz,
    revoked_at   timestamptz
);

CREATE INDEX api_keys_org ON wa_outbox.api_keys (org, id);
