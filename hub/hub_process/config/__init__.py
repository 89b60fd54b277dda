"""What runs in JupyterHub's process to configure it: the configure functions
jupyterhub_config.py calls, OAuth providers, the embedded login and the first-start secrets."""
