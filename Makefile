# The two commands: `make up` starts the deployment, `make test` tests it (see README.md).
SHELL := /bin/bash
COMPOSE ?= docker compose
# The settings make reads (hub/settings/host_setup.py); compose reads .env (or its --env-file).
ENV_FILE ?= .env
PYTHON ?= python3
VENV := .venv
TEST_ENV := tests/e2e/stack.env
WHEELHOUSE := images/singleuser/wheelhouse
# The CPU build of PyTorch for the test image (the production image uses TORCH_PACKAGES).
TEST_TORCH := torch==2.13.0+cpu
# Extra pip arguments to fetch it; elsewhere e.g. --extra-index-url https://download.pytorch.org/whl/cpu
TEST_TORCH_PIP_ARGS ?=

# The commit the images are built from: their org.opencontainers.image.revision label (the version
# label comes from docker-compose.yml, stamped from hub/__init__.py by `make config-docs`).
REVISION_ARG = --build-arg GPUHUB_REVISION=$$(git rev-parse HEAD 2>/dev/null)

# Hosts without registry access build Debian-based bases locally; when `make` creates .env
# (or builds test images) it uses them if they exist.
LOCAL_BASES := PYTHON_BASE_IMAGE=local/python:3.11-bookworm DEBIAN_BASE_IMAGE=local/debian:bookworm
# Shell snippet: export those of them that exist, for the command after it on the same line.
export_local_bases = for pair in $(LOCAL_BASES); do image=$${pair\#*=}; \
	  docker image inspect $$image >/dev/null 2>&1 && export "$$pair"; done

.PHONY: up check down restart-hub upgrade rollback swarm-up swarm-down images test test-images unit e2e storm swarm-storm bench reliability security config-docs

# HTTPS (HUB_DOMAIN), live GPU data on an NVIDIA host, checked settings: exports for compose,
# and compose.host.yml, from hub/settings/host_setup.py (the host's python3, standard library only).
HOST_SETUP = eval "$$($(PYTHON) -m hub.settings.host_setup --env-file $(ENV_FILE))"

up: check .env images
	@$(HOST_SETUP) && $(COMPOSE) up -d --wait
	@port=$$(grep -E '^HUB_PUBLISH=' .env | cut -d= -f2); \
	 provider=$$(grep -E '^OAUTH_PROVIDER=' .env | cut -d= -f2); \
	 domain=$$(grep -E '^HUB_DOMAIN=' .env | cut -d= -f2); \
	 if [ -n "$$domain" ]; then echo "JupyterHub is up: https://$$domain/"; \
	 elif [ -n "$$provider" ] && [ "$$provider" != none ]; then \
	   echo "JupyterHub is up: http://localhost:$${port##*:}/ (login with $$provider; admins: OAUTH_ADMIN_USERS in .env)"; \
	 else \
	 echo "JupyterHub is up: http://localhost:$${port##*:}/ (admin: $$(grep -E '^HUB_ADMIN_USER=' .env | cut -d= -f2);" \
	      "initial password: $(COMPOSE) exec hub cat /srv/jupyterhub/state/admin-password)"; fi

# Stops on a bad setting (HUB_DOMAIN, TLS_CERT_FILE, ...) with a message naming it.
check:
	@$(PYTHON) -m hub.settings.host_setup --env-file $(ENV_FILE) >/dev/null

# Stops users' servers too (their files stay on volumes) and removes the network: scripts/down.sh
down:
	@COMPOSE="$(COMPOSE)" scripts/down.sh

# Only the hub, e.g. after editing .env: users' servers, open notebooks and the proxy keep running.
restart-hub:
	@$(HOST_SETUP) && $(COMPOSE) up -d --no-deps --force-recreate --wait hub

# This checkout over a running deployment (after git pull/checkout): back up the hub's state
# (backups/, root only), build, recreate hub and proxy while users' servers run, say what it did;
# PREVIOUS=<commit> names the running release when its images predate 1.0.0 (scripts/upgrade.sh,
# docs/operations.md "Upgrades"). rollback restores a backup and the previous images.
upgrade: check
	@COMPOSE="$(COMPOSE)" ENV_FILE="$(ENV_FILE)" PYTHON="$(PYTHON)" MAKE="$(MAKE)" PREVIOUS="$(PREVIOUS)" \
	  scripts/upgrade.sh upgrade

rollback:
	@test -n "$(BACKUP)" || { echo "usage: make rollback BACKUP=backups/<project>-<time> (make upgrade printed it)" >&2; exit 2; }
	@COMPOSE="$(COMPOSE)" ENV_FILE="$(ENV_FILE)" PYTHON="$(PYTHON)" scripts/upgrade.sh rollback "$(BACKUP)"

# One hub over several GPU servers (docs/swarm.md): the hub and proxy as a Swarm stack on this
# manager, with .env's variables (docker stack deploy reads no env file). Users' servers stay up
# across a redeploy; swarm-down removes the stack (servers are Swarm services of their own).
swarm-up: check .env images
	@eval "$$($(PYTHON) -m hub.settings.host_setup --env-file $(ENV_FILE) --swarm)" && \
	  docker stack deploy --detach=true -c swarm/stack.yml "$${HUB_NAME_PREFIX:-gpuhub}"

swarm-down:
	@eval "$$($(PYTHON) -m hub.settings.host_setup --env-file $(ENV_FILE) --swarm)" && \
	  docker stack rm "$${HUB_NAME_PREFIX:-gpuhub}"

.env:
	cp .env.example $@
	@for pair in $(LOCAL_BASES); do image=$${pair#*=}; \
	  if docker image inspect $$image >/dev/null 2>&1; then \
	    sed -i "s|^$${pair%%=*}=.*|$$pair|" $@; echo "using local base image $$image (.env)"; fi; done

# Torch wheels are fetched into the build context first when pip is at hand: they are then
# reused across rebuilds instead of downloaded again inside each build.
images: .env
	@set -a; . ./.env; set +a; \
	 if $(PYTHON) -m pip --version >/dev/null 2>&1; then \
	   $(PYTHON) -m pip download -q --disable-pip-version-check -d $(WHEELHOUSE) $$TORCH_PACKAGES \
	     || echo "(pip could not prefetch torch; the image build will download it)"; fi
	@$(HOST_SETUP) && $(COMPOSE) --profile images $${COMPOSE_PROFILES:+--profile $$COMPOSE_PROFILES} build $(REVISION_ARG)

# ---- tests -----------------------------------------------------------------------------------

$(VENV)/.installed: requirements-dev.txt images/hub/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt -e .
	touch $@

test-images:
	@ls $(WHEELHOUSE)/torch-2.13.0+cpu-*.whl >/dev/null 2>&1 || \
	  $(PYTHON) -m pip download -q --disable-pip-version-check --no-deps -d $(WHEELHOUSE) $(TEST_TORCH) $(TEST_TORCH_PIP_ARGS)
	@$(export_local_bases); $(COMPOSE) --env-file $(TEST_ENV) --profile images --profile tls --profile monitoring build $(REVISION_ARG)

unit: $(VENV)/.installed
	$(VENV)/bin/python -m pytest tests/unit -q

# .env.example, docs/configuration.md and compose's hub environment, from hub/settings/table.py
config-docs: $(VENV)/.installed
	$(VENV)/bin/python -m hub.settings.generate --write

e2e: $(VENV)/.installed test-images
	$(VENV)/bin/python -m pytest tests/e2e -q

test: $(VENV)/.installed test-images
	@command -v chromium >/dev/null || { echo "make test needs Chromium for the browser test (Debian: apt-get install chromium)"; exit 1; }
	@rm -f tests/artifacts/security.json
	$(VENV)/bin/python -m pytest tests -q -rA
	@$(VENV)/bin/python tests/e2e/doors.py

# A student (code in their own kernel) and a stranger (no account) try every door of
# docs/security.md's threat model on the real stack (also part of `make test`); prints one JSON
# line {"doors_tried", "open", ...} and exits 1 if a door is open.
security: $(VENV)/.installed test-images
	@rm -f tests/artifacts/security.json; \
	 PYTHONPATH=tests/e2e $(VENV)/bin/python -m pytest tests/e2e/test_security.py tests/e2e/test_tls.py -q -rA; status=$$?; \
	 $(VENV)/bin/python tests/e2e/doors.py || status=1; exit $$status

# 12 users press Start at once on the engine's GPUs; prints one JSON line (README, "GPUs").
storm: $(VENV)/.installed test-images
	$(VENV)/bin/python tests/e2e/storm.py

# One hub over 3 docker-in-docker Swarm nodes x 2 fake GPUs (tests/swarm/; the nodes' engines build
# the hub image and a single-user image without PyTorch from test-images' ones): storm, node death, hub restart, burst, spawn p50 vs one host;
# prints one JSON line (bench/results/swarm-storm-latest.json), exits 1 if an expectation failed.
swarm-storm: $(VENV)/.installed
	$(VENV)/bin/python tests/swarm/swarmstorm.py

# Floor vs. stock DockerSpawner vs. ours, one run, side by side: bench/results/latest.{json,png};
# then the GPU console's metrics endpoint and usage sync with 200 servers: bench/results/usage-latest.json;
# then GPU time (bench/gpu_time.py): queue hand-over, 20 users on the GPUs in FIFO, reclaim timing;
# then a class of 200 logging in at once and a login storm (bench/logins.py); then what the users'
# network rules cost a spawn, and whether they hold with 200 servers (bench/isolation.py); then
# Start to a notebook's first output in Chromium, warm kernel off/on (bench/instant_start.py; its --full: the matrix);
# then the 9 a.m. class (bench/class_rush.py), short: 20 students over 10 s through login, spawn form,
# progress, JupyterLab's assets and a kernel; the full one: make bench CLASS_RUSH_ARGS="--students 100 --window 60"
CLASS_RUSH_ARGS ?=
bench: $(VENV)/.installed test-images
	@$(export_local_bases); $(VENV)/bin/python bench/run.py
	$(VENV)/bin/python bench/usage.py
	$(VENV)/bin/python bench/gpu_time.py
	$(VENV)/bin/python bench/logins.py
	$(VENV)/bin/python bench/isolation.py
	$(VENV)/bin/python bench/instant_start.py --samples 4
	$(VENV)/bin/python bench/class_rush.py $(CLASS_RUSH_ARGS)

# Load, faults (including a Docker daemon restart), data, bad input and isolation against the
# real engine (README, "Reliability"), and upgrades from two older releases (tests/e2e/test_upgrade.py);
# prints one JSON line, exits 1 if anything failed or was lost.
reliability: $(VENV)/.installed test-images
	@rm -f tests/artifacts/reliability.json; start=$$(date +%s); \
	 GPUHUB_RELIABILITY_FULL=1 GPUHUB_LOAD_USERS=30 GPUHUB_FUZZ_EXAMPLES=50 PYTHONPATH=tests/e2e \
	   $(VENV)/bin/python -m pytest -p reliability tests/e2e/test_reliability_*.py tests/e2e/test_upgrade.py -q -rA; status=$$?; \
	 $(VENV)/bin/python tests/e2e/reliability.py $$(( $$(date +%s) - start )) || status=1; exit $$status
