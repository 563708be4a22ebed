-- nexus store, schema version 2: per-network RPC allow/deny lists for the delegator
-- (JSON lists of kubo command paths such as "pin/ls" or "key").
ALTER TABLE networks ADD COLUMN api_allow TEXT NOT NULL DEFAULT '[]';
ALTER TABLE networks ADD COLUMN api_deny TEXT NOT NULL DEFAULT '[]';
