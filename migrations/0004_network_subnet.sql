-- nexus store, schema version 4: the IPv4 subnet nexus allocated to each network (from
-- docker.subnet_pool), as CIDR text. NULL: a network made before nexus allocated subnets; its
-- Docker network keeps the subnet Docker's default pools gave it.
ALTER TABLE networks ADD COLUMN subnet TEXT;
