"""The deployment's configuration: the settings table (every environment variable, its type,
default and help), the configure functions jupyterhub_config.py calls, OAuth providers, the
embedded login, the first-start secrets, and the settings the hub hands to the GPU console."""

STATE_DIR = "/srv/jupyterhub/state"  # the hub's state volume
