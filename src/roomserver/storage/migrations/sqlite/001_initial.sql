-- roomserver schema, version 1 (SQLite). Booleans are INTEGER 0/1 in both dialects.

-- A row exists for every room an event was stored for; version 0 marks a room that is not
-- created yet (only outliers so far). Every RoomUpdate bumps version (optimistic concurrency).
CREATE TABLE rooms (
    room_nid INTEGER PRIMARY KEY,
    room_id TEXT NOT NULL UNIQUE,
    room_version TEXT NOT NULL,
    forward_extremities TEXT NOT NULL DEFAULT '[]',
    current_state INTEGER,
    last_sent_event_id TEXT,
    version INTEGER NOT NULL DEFAULT 0
);

-- event_nid is also the event's stream position (assigned in insertion order).
CREATE TABLE events (
    event_nid INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_nid INTEGER NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    depth INTEGER NOT NULL,
    outlier INTEGER NOT NULL,
    rejected INTEGER NOT NULL,
    rejection_reason TEXT,
    soft_failed INTEGER NOT NULL,
    state_before INTEGER,
    redacted_because TEXT,
    json BLOB NOT NULL
);

-- Which stored events cite an event as a prev event (forward extremity bookkeeping).
CREATE TABLE prev_edges (
    prev_event_id TEXT NOT NULL,
    event_nid INTEGER NOT NULL,
    PRIMARY KEY (prev_event_id, event_nid)
) WITHOUT ROWID;

-- Auth chain index: every state event sits at (chain_id, sequence); reach packs, for every
-- chain holding an auth ancestor, the highest sequence reached (docs/storage.md).
CREATE TABLE auth_chain_positions (
    event_nid INTEGER PRIMARY KEY,
    chain_id INTEGER NOT NULL,
    sequence INTEGER NOT NULL,
    reach BLOB NOT NULL
);
CREATE UNIQUE INDEX auth_chain_positions_chain ON auth_chain_positions (chain_id, sequence);

CREATE TABLE state_keys (
    key_nid INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    UNIQUE (type, state_key)
);

-- A snapshot is its stored base plus its rows in state_deltas (event_nid NULL: key removed).
-- parent is the snapshot it was written against; changed_keys packs the keys that differ
-- from parent. position counts state changes from the root (docs/storage.md).
CREATE TABLE state_snapshots (
    snapshot_id INTEGER PRIMARY KEY,
    room_nid INTEGER NOT NULL,
    parent INTEGER,
    base INTEGER,
    position INTEGER NOT NULL,
    changed_keys BLOB NOT NULL
);

CREATE TABLE state_deltas (
    snapshot_id INTEGER NOT NULL,
    key_nid INTEGER NOT NULL,
    event_nid INTEGER,
    PRIMARY KEY (snapshot_id, key_nid)
) WITHOUT ROWID;

CREATE TABLE redactions (
    redaction_id TEXT PRIMARY KEY,
    target_id TEXT NOT NULL,
    validated INTEGER NOT NULL
);
CREATE INDEX redactions_target ON redactions (target_id);

CREATE TABLE memberships (
    room_nid INTEGER NOT NULL,
    user_id TEXT NOT NULL,
    server_name TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    PRIMARY KEY (room_nid, user_id)
) WITHOUT ROWID;
CREATE INDEX memberships_by_state ON memberships (room_nid, membership, server_name);

CREATE TABLE outbox (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
    room_nid INTEGER NOT NULL,
    msg_id TEXT NOT NULL UNIQUE,
    output_type TEXT NOT NULL,
    payload BLOB NOT NULL,
    sent INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_pending ON outbox (room_nid, sequence) WHERE sent = 0;

CREATE TABLE server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verify_key BLOB NOT NULL,
    valid_until_ts INTEGER NOT NULL,
    expired_ts INTEGER,
    PRIMARY KEY (server_name, key_id)
) WITHOUT ROWID;
