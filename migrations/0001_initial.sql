-- nexus store, schema version 1. The same SQL runs on SQLite and Postgres: integers are BIGINT,
-- booleans are 0/1, lists are JSON text, timestamps are unix milliseconds.

CREATE TABLE networks (
    name            TEXT    NOT NULL PRIMARY KEY,
    replicas        BIGINT  NOT NULL,
    cpu_millis      BIGINT  NOT NULL,
    memory_bytes    BIGINT  NOT NULL,
    disk_bytes      BIGINT  NOT NULL,
    users           TEXT    NOT NULL,
    gateway_public  BIGINT  NOT NULL CHECK (gateway_public IN (0, 1)),
    allowed_origins TEXT    NOT NULL,
    -- Secret: the pre-shared key in kubo's swarm.key format.
    swarm_key       TEXT    NOT NULL,
    bootstrap_peers TEXT    NOT NULL,
    desired         TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    status_reason   TEXT,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    activated_at    BIGINT
);

CREATE TABLE nodes (
    network      TEXT   NOT NULL REFERENCES networks (name) ON DELETE CASCADE,
    idx          BIGINT NOT NULL,
    -- Secret: kubo's Identity.PrivKey (base64 of the libp2p protobuf key).
    private_key  TEXT   NOT NULL,
    -- Derived from private_key; stored for inspection and checked on read.
    peer_id      TEXT   NOT NULL,
    swarm_port   BIGINT,
    api_port     BIGINT,
    gateway_port BIGINT,
    container_id TEXT,
    last_error   TEXT,
    PRIMARY KEY (network, idx)
);

CREATE INDEX nodes_network ON nodes (network);
