"""GPUs: the model and admin intent (model.py), pure allocation (allocator.py), the claim a
container carries and how the engine's containers are read back (claim.py), discovery (inventory.py,
nvml.py) and the hub's one manager that ties them to the engine under one lock (manager.py)."""
