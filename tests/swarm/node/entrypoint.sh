#!/bin/bash
# Starts this test node's dockerd (config: /etc/docker/daemon.json, written by cluster.py
# before the container starts). What moby's hack/dind does, reduced to what we need.
set -euo pipefail
# cluster.py passes this node's settings in the environment: daemon.json as it should read,
# the node's fake GPUs (comma list of UUIDs, in index order) and the runtime's swarm-resource.
mkdir -p /etc/docker /etc/fake-nvidia /etc/cdi
[ -n "${NODE_DAEMON_JSON:-}" ] && printf '%s\n' "$NODE_DAEMON_JSON" > /etc/docker/daemon.json
# The same fake GPUs as a CDI spec (as on this machine's host engine), for a single-host hub run
# against this node's engine (swarm-storm's single-host reference requests GPUs by CDI).
[ -n "${NODE_CDI_SPEC:-}" ] && printf '%s\n' "$NODE_CDI_SPEC" > /etc/cdi/fake-nvidia.yaml
printf '%s\n' "${NODE_FAKE_GPUS:-}" | tr ',' '\n' | sed '/^$/d' > /etc/fake-nvidia/gpus
printf '%s\n' "${NODE_SWARM_RESOURCE:-}" | tr ',' '\n' | sed '/^$/d' > /etc/fake-nvidia/swarm-resource
unset NODE_DAEMON_JSON NODE_FAKE_GPUS NODE_SWARM_RESOURCE NODE_CDI_SPEC
if [ -d /sys/kernel/security ] && ! mountpoint -q /sys/kernel/security; then
  mount -t securityfs none /sys/kernel/security || true
fi
# Mounts made inside the node's containers must propagate (volumes, the engine's own mounts).
mount --make-rshared /
rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid
# The swarm executor pulls every service image first; there is no registry here, so it would
# only wait for DNS to fail: use the image the node already holds (loaded by cluster.py).
export DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1
# tcp without TLS: reachable only on the test network (the tests use it with docker-py).
exec dockerd --host=unix:///var/run/docker.sock --host=tcp://0.0.0.0:2375 --tls=false "$@" >>/var/log/dockerd.log 2>&1
