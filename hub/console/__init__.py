"""The GPU console: a hub-managed service where admins see and assign the host's GPUs.

app.py (web page and REST API, admin-only through HubOAuth), core.py (state and actions,
computed exactly as the spawner does), usage.py (NVML sampling), cli.py (``gpuhub-gpus``).
"""
