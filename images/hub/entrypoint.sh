#!/bin/sh
# Starts as root only to learn which group owns the Docker socket, then drops to the
# unprivileged 'jupyterhub' user with that one extra group, keeping no capabilities.
# (Access to the socket is root-equivalent on the host: see README, "Threat model".)
set -eu
socket="${DOCKER_SOCKET:-/var/run/docker.sock}"
if [ "$(id -u)" != 0 ]; then exec "$@"; fi
if [ ! -S "$socket" ]; then
  echo "hub: no Docker socket at $socket; mount the host's socket (docker-compose.yml does)" >&2
  exit 1
fi
groups="$(id -g jupyterhub),$(stat -c %g "$socket")"
exec setpriv --reuid=jupyterhub --regid=jupyterhub --groups="$groups" \
  --inh-caps=-all --bounding-set=-all --no-new-privs -- "$@"
