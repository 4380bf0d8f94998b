-- A datacenter's router on its public network: an entry point's default
-- route. It lies in one of the datacenter's Home Address pools and is
-- never given out as a Home Address.
ALTER TABLE datacenters ADD COLUMN public_gateway TEXT;
