#!/usr/bin/env bash
# `make down`: stop everything the deployment started, users' servers included, and say so.
#
# Order: the hub first (so that it starts nothing more and does not record the servers as
# "stopped on their own"), then every user container of this deployment (label
# gpuhub.instance=<project>; each holds its GPU and is attached to the deployment's network),
# then the compose services of every profile and the network. Volumes stay: users' files
# (<prefix>-user-*), course materials and the hub's state. At the next `make up` the hub polls
# each server it had, finds its container gone, and shows it as stopped.
#
# COMPOSE: the compose command (default `docker compose`), e.g. with --env-file.
set -euo pipefail
read -r -a compose <<< "${COMPOSE:-docker compose}"
project=$("${compose[@]}" config 2>/dev/null | sed -n 's/^name: *//p' | head -n1 || true)
project=${project:-gpuhub}

"${compose[@]}" --profile '*' stop hub >/dev/null 2>&1 || true

mapfile -t containers < <(docker ps -a --filter "label=gpuhub.instance=$project" --format '{{.Names}}')
if ((${#containers[@]})); then
  # Parked servers (docs/gpus.md, "Parking") are paused: unpaused first, so that they take their
  # SIGTERM now rather than being killed after the 10 s (their GPU state, in host memory, goes).
  mapfile -t paused < <(docker ps --filter "label=gpuhub.instance=$project" --filter status=paused --format '{{.Names}}')
  if ((${#paused[@]})); then
    docker unpause "${paused[@]}" >/dev/null 2>&1 || true
    echo "Unpaused ${#paused[@]} parked server(s) to stop them: ${paused[*]}"
  fi
  # Their servers get a SIGTERM and 10 s to save, as when a user presses Stop.
  docker stop -t 10 "${containers[@]}" >/dev/null 2>&1 || true
  docker rm -f "${containers[@]}" >/dev/null 2>&1 || true  # AutoRemove does it; not all were running
  echo "Stopped ${#containers[@]} user server(s): ${containers[*]} (their files stay in the volumes $project-user-*)"
else
  echo "No user server was running."
fi

"${compose[@]}" --profile '*' down --remove-orphans
if docker network inspect "$project-net" >/dev/null 2>&1; then
  echo "The network $project-net is still there: something else is attached to it:" >&2
  docker network inspect "$project-net" --format '{{range .Containers}}{{.Name}} {{end}}' >&2
  exit 1
fi
echo "Stopped: hub, proxy, users' servers; network $project-net removed. Volumes (users' files, hub state) kept; \`make up\` starts again."
