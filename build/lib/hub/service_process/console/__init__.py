"""The GPU console: a hub-managed service where admins see and assign the host's GPUs
(docs/console.md).

app.py (the service's main and wiring), handlers.py (the page and the REST API), openapi.yaml
and openapi.py (the API, and request checks from it), auth.py (login through the hub),
hubapi.py (the hub's REST API), engine.py (the Docker engine), state.py (what the console sees,
computed exactly as the spawner does, and ``commit``), gpu_actions.py and course_actions.py
(the admin's actions), audit.py (the audit log), usage.py (GPU usage history), errors.py,
cli.py (``gpuhub-gpus``).
"""
