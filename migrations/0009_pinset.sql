-- nexus store, schema version 9: each network's pinset (issue 16). Times are unix milliseconds.

-- One pin: a request id of its own (not the CID: two users pinning one CID hold two pins).
-- `meta` is a JSON object of strings, `origins` a JSON list; `owner` the user who asked ('' =
-- the operator). `removed_at` set: removed from the set, being unpinned from its nodes, then
-- deleted; no listing shows it.
CREATE TABLE pins (
    network    TEXT   NOT NULL REFERENCES networks (name) ON DELETE CASCADE,
    request_id TEXT   NOT NULL,
    cid        TEXT   NOT NULL,
    name       TEXT,
    meta       TEXT   NOT NULL,
    origins    TEXT   NOT NULL,
    owner      TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    status     TEXT   NOT NULL,
    reason     TEXT,
    updated_at BIGINT NOT NULL,
    removed_at BIGINT,
    PRIMARY KEY (network, request_id)
);

CREATE INDEX pins_network_created ON pins (network, created_at);
CREATE INDEX pins_network_cid ON pins (network, cid);

-- A pin's allocation to one node (`idx`, the node's index in the network).
CREATE TABLE pin_allocations (
    network    TEXT   NOT NULL,
    request_id TEXT   NOT NULL,
    idx        BIGINT NOT NULL,
    status     TEXT   NOT NULL,
    reason     TEXT,
    attempts   BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (network, request_id, idx),
    FOREIGN KEY (network, request_id) REFERENCES pins (network, request_id) ON DELETE CASCADE
);
