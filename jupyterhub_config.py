# JupyterHub configuration: declarative, read from the environment (.env via docker compose).
# The logic lives in the hub/ package (hub/hub_process/config/); docs/configuration.md lists every variable.
import os

from hub.hub_process.config.configure import configure_auth, configure_culler, configure_hub, configure_spawner
from hub.hub_process.config.configure import configure_console, configure_queue, configure_reclaim, configure_recovery
from hub.hub_process.config.configure import configure_usage
from hub.hub_process import parking, watchdog
from hub.gpus import doctor
from hub.hub_process.patches import api_body_500, error_reason, login_start, prestart_claim, restart_check
from hub.hub_process.patches import system_resolver
from hub.hub_process.spawner.spawner import recover_gpu_queue

c = get_config()  # noqa: F821 (provided by JupyterHub)
configure_hub(c, os.environ)
configure_auth(c, os.environ)
configure_spawner(c, os.environ)
configure_queue(c, os.environ)
configure_culler(c, os.environ)
configure_console(c, os.environ)
configure_usage(c, os.environ)
configure_reclaim(c, os.environ)
configure_recovery(c, os.environ)
# start-up actions (the configure_* calls above only set configuration)
recover_gpu_queue()  # the line the last hub process left: each waiter is told why, and may rejoin
watchdog.install(c)  # state volume and Docker engine watchdogs
api_body_500.install()  # JupyterHub 6.1: malformed API bodies are a 400, not a 500
error_reason.install()  # JupyterHub 6.1: an error without a message says its status, not null
restart_check.install()  # JupyterHub 6.1: a hub killed mid-start recovers in seconds, Stop is never a 500
system_resolver.install()  # JupyterHub 6.1: names resolved as the system does (c-ares failed on Swarm overlays)
login_start.install(c)  # PRESTART_AT_LOGIN: a single-profile user's server starts as they log in
prestart_claim.install()  # JupyterHub 6.1: a pre-started server is claimed at its person's first visit
parking.install(c)  # parked servers (GPU_IDLE_ACTION=park): no route, a Resume page, kept at a restart
doctor.log_at_start(os.environ)  # host health in the log: engine, toolkit CVEs, driver vs CUDA, GPUs
