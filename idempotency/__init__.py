"""Keys, durable records, leases with fencing, version reservations."""
