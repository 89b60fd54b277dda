# jupyterhub-deploy-docker's basic-example configuration, as published, plus one service
# token so the benchmark can drive it through the REST API like ours.
import os

c = get_config()  # noqa: F821
c.JupyterHub.spawner_class = "dockerspawner.DockerSpawner"
c.DockerSpawner.image = os.environ["DOCKER_NOTEBOOK_IMAGE"]
c.DockerSpawner.network_name = os.environ["DOCKER_NETWORK_NAME"]
notebook_dir = os.environ.get("DOCKER_NOTEBOOK_DIR", "/home/jovyan/work")
c.DockerSpawner.notebook_dir = notebook_dir
c.DockerSpawner.volumes = {"gpuhubstock-user-{username}": notebook_dir}
c.DockerSpawner.prefix = "gpuhubstock"
c.DockerSpawner.remove = True
c.DockerSpawner.debug = True
c.JupyterHub.hub_ip = "jupyterhub"
c.JupyterHub.hub_port = 8080
c.JupyterHub.cookie_secret_file = "/data/jupyterhub_cookie_secret"
c.JupyterHub.db_url = "sqlite:////data/jupyterhub.sqlite"
c.JupyterHub.authenticator_class = "nativeauthenticator.NativeAuthenticator"
c.NativeAuthenticator.open_signup = True
c.Authenticator.admin_users = ["admin"]
c.Authenticator.allow_all = True
# Benchmark only: a token with the admin role (and read:metrics, for bench/class_rush.py's
# event-loop lag and request durations from /hub/metrics).
c.JupyterHub.services = [{"name": "bench", "api_token": os.environ["BENCH_TOKEN"]}]
c.JupyterHub.load_roles = [{"name": "bench", "scopes": ["admin:users", "admin:servers", "access:servers", "list:users",
                                                        "read:metrics"],
                            "services": ["bench"]}]
