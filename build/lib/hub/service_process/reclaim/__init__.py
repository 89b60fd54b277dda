"""Idle-GPU reclaim: the policy (policy.py, pure) and the hub-managed service (service.py)."""
