"""GPU inventory and exclusive allocation for the hub (pure logic, no Docker)."""
