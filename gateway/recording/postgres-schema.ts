// The PostgreSQL audit store's schema: the same tables and columns as the SQLite store (so the chain
// entries, whose data are the column values, are identical), plus `airlock_schema_version`.
// Append-only: migration N brings the database from version N to N+1. Never edit a shipped one.
export const PG_MIGRATIONS: string[] = [
  `
  CREATE TABLE sessions (
    id                text PRIMARY KEY,
    protocol          text NOT NULL,
    identity          text NOT NULL,
    groups            text NOT NULL,            -- JSON array, as text: the chain hashes the stored text
    connection        text NOT NULL,
    client_address    text NOT NULL,
    started_at        bigint NOT NULL,          -- ms since epoch
    ended_at          bigint,
    end_reason        text,
    bytes_to_client   bigint NOT NULL DEFAULT 0,
    bytes_from_client bigint NOT NULL DEFAULT 0,
    ord               bigserial NOT NULL        -- insertion order (SQLite's rowid), for stable listings
  );
  CREATE INDEX sessions_started ON sessions (started_at DESC, ord DESC);
  CREATE INDEX sessions_identity ON sessions (identity, started_at DESC);
  CREATE INDEX sessions_connection ON sessions (connection, started_at DESC);

  -- No foreign key to sessions on purpose: an operation recorded out of order is kept, not lost.
  CREATE TABLE operations (
    session_id     text NOT NULL,
    seq            bigint NOT NULL,
    at             bigint NOT NULL,
    text           text NOT NULL,
    kind           text NOT NULL,
    classification text NOT NULL,
    decision       text NOT NULL,
    rule           text,
    reason         text,
    rows           bigint,
    bytes          bigint,
    masked_columns text NOT NULL,
    error          text,
    duration_ms    double precision,
    approval       text,
    PRIMARY KEY (session_id, seq)
  );
  CREATE INDEX operations_decision ON operations (decision, at);

  CREATE TABLE audit (
    id      bigserial PRIMARY KEY,
    at      bigint NOT NULL,
    kind    text NOT NULL,
    subject text NOT NULL,
    actor   text,
    detail  text NOT NULL
  );
  CREATE INDEX audit_subject ON audit (subject, at, id);
  CREATE INDEX audit_at ON audit (at, id);

  CREATE TABLE journal (
    seq    bigint PRIMARY KEY,
    at     bigint NOT NULL,
    kind   text NOT NULL,
    entity text NOT NULL,
    item   bigint,
    entry  text NOT NULL,
    hash   text NOT NULL
  );
  CREATE INDEX journal_entity ON journal (entity, item, seq);
  CREATE TABLE checkpoints (
    seq    bigint NOT NULL,
    base   smallint NOT NULL,
    at     text NOT NULL,
    hash   text NOT NULL,
    key_id text NOT NULL,
    sig    text NOT NULL,
    PRIMARY KEY (seq, base)
  );
  `,
  // Just-in-time elevation windows (gateway/elevation/), as in the SQLite store's migration 3.
  `
  CREATE TABLE IF NOT EXISTS elevations (
    id            text PRIMARY KEY,
    identity      text NOT NULL,
    owner         text,
    role          text NOT NULL,
    connection    text NOT NULL,
    reason        text NOT NULL,
    approvers     text NOT NULL,
    break_glass   smallint NOT NULL,
    starts_at     bigint NOT NULL,
    until         bigint NOT NULL,
    revoked_at    bigint,
    revoked_by    text,
    revoke_reason text
  );
  CREATE INDEX IF NOT EXISTS elevations_identity ON elevations (identity, until);
  CREATE INDEX IF NOT EXISTS elevations_until ON elevations (until);
  `,
];

export const PG_SCHEMA_VERSION = PG_MIGRATIONS.length;

export const SUMMARY_SELECT_PG = `SELECT s.id, s.protocol, s.identity, s.groups, s.connection, s.client_address, s.started_at,
  s.ended_at, s.end_reason, s.bytes_to_client, s.bytes_from_client,
  (SELECT count(*) FROM operations o WHERE o.session_id = s.id) AS op_count,
  (SELECT count(*) FROM operations o WHERE o.session_id = s.id AND o.decision = 'deny') AS denied_count,
  (SELECT count(*) FROM operations o WHERE o.session_id = s.id AND o.decision = 'review') AS review_count,
  (SELECT count(*) FROM operations o WHERE o.session_id = s.id AND o.masked_columns <> '[]') AS masked_count,
  (SELECT count(*) FROM operations o WHERE o.session_id = s.id AND o.error IS NOT NULL) AS error_count
  FROM sessions s`;
