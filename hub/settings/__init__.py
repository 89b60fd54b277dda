"""The settings: one table (table.py) is the single source for every environment variable the
processes read, `.env.example`, the configuration reference and the compose environment; the
readers that parse them; the host's own setup (host_setup.py, run on the host before compose).
Stdlib-only at import: host_setup runs with the host's python3."""

STATE_DIR = "/srv/jupyterhub/state"  # the hub's state volume
PROFILES_FILE = "/srv/jupyterhub/profiles.yaml"  # the profiles, mounted into the hub
# gpu-reclaim's token and address, in the service process's environment (set by configure_reclaim)
RECLAIM_TOKEN_ENV = "GPUHUB_RECLAIM_API_TOKEN"
RECLAIM_URL_ENV = "GPUHUB_RECLAIM_URL"
HOST_MEMORY_STATE_FILE = f"{STATE_DIR}/host-memory.json"  # the hub's memory line, for the console
