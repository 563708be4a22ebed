-- nexus store, schema version 8: each network's replication factor (issue 16): on how many of
-- its nodes each pin of its pinset is held. 0 = `all` (follows replicas). Networks made before
-- get the default a new network gets, min(2, replicas).
ALTER TABLE networks ADD COLUMN replication BIGINT NOT NULL DEFAULT 0;
UPDATE networks SET replication = CASE WHEN replicas < 2 THEN replicas ELSE 2 END;
