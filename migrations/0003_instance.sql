-- nexus store, schema version 3: which installation the store belongs to, and which daemon
-- acts for it now.

-- One row, written on the first start: the instance (Docker owner label `io.nexus.instance`)
-- of this store's nodes, configured or generated.
CREATE TABLE instance (
    id         BIGINT NOT NULL PRIMARY KEY CHECK (id = 1),
    name       TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

-- The lease: the live daemon acting for an instance (at most one). Times are unix
-- milliseconds of the database's clock; a lease whose expires_at has passed may be taken.
CREATE TABLE instance_lease (
    instance    TEXT   NOT NULL PRIMARY KEY,
    holder      TEXT   NOT NULL,
    host        TEXT   NOT NULL,
    pid         BIGINT NOT NULL,
    acquired_at BIGINT NOT NULL,
    renewed_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
