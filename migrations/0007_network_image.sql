-- nexus store, schema version 7: each network's node image (`network create|update --image`).
-- NULL: a network made before networks had their own image. It ran the daemon's `node.image`;
-- the daemon writes that value into the row at its next start (orchestrator start-up), so a
-- later change of `node.image` only reaches new networks.
ALTER TABLE networks ADD COLUMN image TEXT;
