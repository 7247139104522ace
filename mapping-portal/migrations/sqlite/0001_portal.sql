-- The portal's schema (SQLite). migrations/postgres/ holds the same tables for PostgreSQL;
-- the two differ only in how ids are generated. Times are Unix seconds.

CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    uid BIGINT NOT NULL UNIQUE,
    gid BIGINT NOT NULL UNIQUE,
    gecos TEXT NOT NULL,
    home TEXT NOT NULL,
    shell TEXT NOT NULL,
    created BIGINT NOT NULL
);

CREATE TABLE identities (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('token', 'dn')),
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    idp TEXT,
    email TEXT,
    name TEXT,
    eppn TEXT,
    created BIGINT NOT NULL,
    UNIQUE (kind, issuer, subject)
);

CREATE TABLE links (
    id INTEGER PRIMARY KEY,
    identity_id BIGINT NOT NULL REFERENCES identities (id),
    account TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'pending')),
    created BIGINT NOT NULL,
    approved_by TEXT,
    UNIQUE (identity_id, account)
);

CREATE TABLE suspensions (
    id INTEGER PRIMARY KEY,
    identity_id BIGINT UNIQUE REFERENCES identities (id),
    account TEXT UNIQUE,
    reason TEXT NOT NULL,
    suspended_by TEXT NOT NULL,
    at BIGINT NOT NULL,
    CHECK ((identity_id IS NULL) <> (account IS NULL))
);

CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    from_addr TEXT,
    detail TEXT NOT NULL
);

CREATE TABLE export_state (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    serial BIGINT NOT NULL,
    changed BIGINT NOT NULL
);

INSERT INTO export_state (id, serial, changed) VALUES (1, 0, 0);
