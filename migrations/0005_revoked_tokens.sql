-- nexus store, schema version 5: revoked tenant tokens (issue 15).

-- A token id (`jti`) the delegator refuses, until forget_at (unix seconds): the time by which
-- every token that can carry this id has expired anyway, after which the row is deleted.
CREATE TABLE revoked_tokens (
    jti        TEXT   NOT NULL PRIMARY KEY,
    revoked_at BIGINT NOT NULL,
    forget_at  BIGINT NOT NULL
);
