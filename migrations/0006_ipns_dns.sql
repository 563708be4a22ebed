-- nexus store, schema version 6: whether a network's public gateway serves /ipns/ names that
-- need DNS (DNSLink). 0: refused there (the default, and every network recorded before).
ALTER TABLE networks ADD COLUMN ipns_dns BIGINT NOT NULL DEFAULT 0 CHECK (ipns_dns IN (0, 1));
