-- Segel schema. Portable between SQLite and PostgreSQL through sqlx's Any driver:
-- TEXT ids made by the application, BIGINT epoch milliseconds for times, BIGINT 0/1 for flags.
CREATE TABLE apps (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    key_prefix TEXT NOT NULL UNIQUE,
    key_hash TEXT NOT NULL,
    scopes TEXT NOT NULL,
    webhook_secret TEXT NOT NULL,
    revoked BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE officials (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    name TEXT NOT NULL,
    title TEXT NOT NULL,
    nip TEXT NOT NULL,
    email TEXT,
    roles TEXT NOT NULL,
    key_id TEXT,
    failed_attempts BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX officials_nip ON officials (nip);

CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    official_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE documents (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    title TEXT NOT NULL,
    letter_number TEXT NOT NULL,
    external_ref TEXT,
    status TEXT NOT NULL,
    verification_code TEXT NOT NULL UNIQUE,
    original_sha256 TEXT NOT NULL,
    current_sha256 TEXT NOT NULL,
    signed_sha256 TEXT,
    callback_url TEXT,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX documents_app ON documents (app_id, created_at);

CREATE TABLE steps (
    document_id TEXT NOT NULL,
    n BIGINT NOT NULL,
    official_id TEXT NOT NULL,
    action TEXT NOT NULL,
    placement TEXT NOT NULL,
    status TEXT NOT NULL,
    acted_at BIGINT,
    reason TEXT,
    PRIMARY KEY (document_id, n)
);
CREATE INDEX steps_official ON steps (official_id, status);

CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    document_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    url TEXT NOT NULL,
    event TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX webhooks_due ON webhooks (status, next_attempt_at);

CREATE TABLE webhook_attempts (
    webhook_id TEXT NOT NULL,
    n BIGINT NOT NULL,
    at BIGINT NOT NULL,
    status_code BIGINT,
    error TEXT,
    PRIMARY KEY (webhook_id, n)
);

CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    total BIGINT NOT NULL,
    done BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    status TEXT NOT NULL,
    results TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- The hash-chained audit log. `audit_head` has one row; appending locks it, so instances
-- sharing one PostgreSQL append one after another and the chain never forks.
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    action TEXT NOT NULL,
    document_id TEXT,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX audit_document ON audit_log (document_id);

CREATE TABLE audit_head (
    id BIGINT PRIMARY KEY,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE audit_checkpoints (
    seq BIGINT PRIMARY KEY,
    head_hash TEXT NOT NULL,
    at BIGINT NOT NULL,
    signature TEXT NOT NULL,
    certificate TEXT NOT NULL
);
