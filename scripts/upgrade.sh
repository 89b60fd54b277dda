#!/usr/bin/env bash
# `make upgrade` and `make rollback`: upgrade a running deployment to this checkout, and back.
#
#   scripts/upgrade.sh upgrade              # from the checkout of the new release (after git pull/checkout)
#   scripts/upgrade.sh rollback BACKUP_DIR  # back to what ran before that upgrade
#   scripts/upgrade.sh migrate-env FILE     # (upgrade's step 3 alone) blank earlier releases' stock image tags
#
# upgrade:
#   1. finds the deployment's hub and proxy (compose project = HUB_NAME_PREFIX) and the release
#      they run: the hub image's version and revision labels (1.0.0 on), or PREVIOUS=<commit>;
#   2. keeps their images under rollback tags (gpuhub-rollback/{hub,proxy}:<stamp>) and writes
#      a backup folder (mode 700): the env file, the profiles file, the previous release's
#      files (git archive of its commit) and this script;
#   3. blanks image tags in the env file that are an earlier release's stock tag
#      (HUB_IMAGE=gpuhub/hub:0.1.0, ...), so the new images get this release's tags;
#   4. builds the images (`make images`; GPUHUB_UPGRADE_BUILD replaces the command);
#   5. stops the hub only (users' servers, their open notebooks and the proxy keep running) and
#      archives the state volumes (hub-state, proxy-token, metrics-token) into state.tar.gz,
#      with a throwaway container of the previous hub image (it has tar; nothing is pulled);
#   6. runs the new init (new secrets such as the metrics token; nothing overwritten) and
#      recreates hub and proxy (`up --no-deps`): the hub migrates its database at start
#      (JupyterHub's upgrade_db, which copies jupyterhub.sqlite first), finds the running
#      servers and re-adds their routes;
#   7. checks that the hub answers and every user server that ran still runs, and says so.
#   A failure before 6 leaves the old hub running (started again) and the env file as it was;
#   a failure in 6 or 7 rolls back by itself (NO_AUTO_ROLLBACK=1: it does not).
#
# rollback: stops the hub, restores the state volumes from state.tar.gz (files made since the
# upgrade are lost: logins, usage and audit entries of that time), and recreates hub and proxy
# from the previous release's files in the backup with its kept images. Users' servers keep
# running throughout; users' volumes are never touched by either.
#
# Settings (environment): COMPOSE (default `docker compose`, may carry --env-file), ENV_FILE
# (.env), PYTHON (python3), BACKUP_ROOT (backups), PREVIOUS (the running release's commit, when
# its images have no revision label), GPUHUB_UPGRADE_BUILD, NO_AUTO_ROLLBACK, WAIT_TIMEOUT (180).
set -euo pipefail
umask 077

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
read -r -a compose <<< "${COMPOSE:-docker compose}"
ENV_FILE=${ENV_FILE:-.env}
PYTHON=${PYTHON:-python3}
BACKUP_ROOT=${BACKUP_ROOT:-backups}
WAIT_TIMEOUT=${WAIT_TIMEOUT:-180}
STATE_VOLUMES=(hub-state proxy-token metrics-token)
# The images `make images` tags with the release (hub/settings/table.py, release_tag).
STOCK_IMAGES='HUB_IMAGE=gpuhub/hub PROXY_IMAGE=gpuhub/proxy SINGLEUSER_IMAGE=gpuhub/pytorch-notebook CADDY_IMAGE=gpuhub/caddy PROMETHEUS_IMAGE=gpuhub/prometheus'

say() { printf '%s\n' "$*"; }
step() { printf '==> %s\n' "$*"; }
die() { printf 'upgrade: %s\n' "$*" >&2; exit 1; }

version() { sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$ROOT/hub/__init__.py"; }

# The env file's value of a variable ("" when unset), as compose reads a plain KEY=value line.
env_value() { sed -n "s/^$1=//p" "$2" | tail -n1; }

# upgrade's step 3: an image variable set to an earlier release's stock tag would make the build
# overwrite that tag (and keep the new code under an old name): blank it (this release's tag).
migrate_env() {
  local file=$1 current pair name repo value changed=0
  current=$(version)
  for pair in $STOCK_IMAGES; do
    name=${pair%%=*} repo=${pair#*=}
    value=$(env_value "$name" "$file")
    if [[ $value =~ ^${repo}:[0-9]+\.[0-9]+\.[0-9]+$ && $value != "$repo:$current" ]]; then
      sed -i "s|^$name=.*|$name=|" "$file"
      say "    $file: $name=$value (an earlier release's tag) -> blank: $repo:$current"
      changed=1
    fi
  done
  ((changed)) || say "    $file: no earlier release's image tag to change"
}

project_name() {
  local name
  name=$("${compose[@]}" config 2>/dev/null | sed -n 's/^name: *//p' | head -n1 || true)
  printf '%s' "${name:-gpuhub}"
}

# The container of a compose service of the project (running or not), newest first.
service_container() {
  docker ps -a --filter "label=com.docker.compose.project=$1" --filter "label=com.docker.compose.service=$2" \
    --format '{{.ID}}' | head -n1
}

label() {  # an image's label, "" when it has none (releases before 1.0.0 have none)
  { docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; } | sed 's/<no value>//'
}

user_servers() {  # the running user containers of the deployment: "id name" lines, sorted
  docker ps --filter "label=gpuhub.instance=$1" --format '{{.ID}} {{.Names}}' | sort
}

host_setup() {  # make up's exports (HTTPS, NVML, checks) for the checkout in $1
  local module  # where the release keeps it: hub/settings/ from 1.1, hub/config/ in 1.0
  for module in hub.settings.host_setup hub.config.host_setup; do
    if [[ -f $1/${module//.//}.py ]]; then
      eval "$(cd "$1" && "$PYTHON" -m "$module" --env-file "$2")"
      return
    fi
  done
}

hub_health() {  # the hub's /hub/health from inside its container (no port needed)
  docker exec "$1" python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8081/hub/health', timeout=5)" \
    >/dev/null 2>&1
}

# Archive the state volumes of project $1 into $2/state.tar.gz with image $3; one folder per volume.
backup_volumes() {
  local project=$1 dir=$2 image=$3 mounts=() present=() key
  for key in "${STATE_VOLUMES[@]}"; do
    if docker volume inspect "${project}_$key" >/dev/null 2>&1; then
      mounts+=(-v "${project}_$key:/backup/$key:ro")
      present+=("$key")
    fi
  done
  ((${#present[@]})) || die "no state volume of project $project (${project}_hub-state): is HUB_NAME_PREFIX the deployment's?"
  docker run --rm --network none --user 0 --entrypoint tar "${mounts[@]}" "$image" \
    -C /backup -czf - "${present[@]}" > "$dir/state.tar.gz"
  tar -tzf "$dir/state.tar.gz" > "$dir/state.list"
  grep -q '^hub-state/jupyterhub.sqlite$' "$dir/state.list" || grep -q '^hub-state/./jupyterhub.sqlite$' "$dir/state.list" \
    || die "the backup has no hub-state/jupyterhub.sqlite: $dir/state.list"
  say "    $dir/state.tar.gz: ${present[*]} ($(grep -cv '/$' "$dir/state.list") files, $(du -h "$dir/state.tar.gz" | cut -f1))"
}

restore_volumes() {  # project $1, backup folder $2, image $3: each volume emptied, then extracted
  local project=$1 dir=$2 image=$3 mounts=() keys=() key
  mapfile -t keys < <(cut -d/ -f1 "$dir/state.list" | sort -u)
  for key in "${keys[@]}"; do
    docker volume create "${project}_$key" >/dev/null
    mounts+=(-v "${project}_$key:/backup/$key")
  done
  docker run --rm -i --network none --user 0 --entrypoint sh "${mounts[@]}" "$image" -c \
    'for d in "$@"; do find "/backup/$d" -mindepth 1 -delete; done; tar -C /backup -xzf -' sh "${keys[@]}" \
    < "$dir/state.tar.gz"
  say "    restored ${keys[*]} from $dir/state.tar.gz"
}

meta() { sed -n "s/^$1=//p" "$2/meta" | tail -n1; }

cmd_rollback() {
  local dir=${1:-} project hub_image proxy_image release profiles previous hub
  [[ -n $dir ]] || die "usage: $0 rollback BACKUP_DIR (a folder under $BACKUP_ROOT/ that make upgrade wrote)"
  dir=$(cd "$dir" 2>/dev/null && pwd) || die "no backup folder $1"
  for f in meta state.tar.gz state.list release.tar env; do
    [[ -f $dir/$f ]] || die "$dir/$f is missing: not a backup written by make upgrade"
  done
  project=$(meta project "$dir") hub_image=$(meta hub_rollback_image "$dir") proxy_image=$(meta proxy_rollback_image "$dir")
  previous=$(meta previous_release "$dir")
  for image in "$hub_image" "$proxy_image"; do
    docker image inspect "$image" >/dev/null 2>&1 || die "the previous image $image is gone (docker image rm?); rebuild it from the previous release's checkout with that tag"
  done
  step "Rolling back project $project to $previous (backup $dir)"
  step "Stopping the hub (users' servers keep running)"
  hub=$(service_container "$project" hub)
  [[ -z $hub ]] || docker stop "$hub" >/dev/null
  step "Restoring the state volumes"
  restore_volumes "$project" "$dir" "$hub_image"
  step "Recreating hub and proxy with the previous images ($hub_image, $proxy_image)"
  release=$dir/release
  # -p: the archive's modes, not this script's umask: the hub (uid 990) reads jupyterhub_config.py
  # through its bind mount (the backup folder's own 700 still keeps other users out)
  rm -rf "$release" && mkdir -p "$release" && tar -C "$release" -xpf "$dir/release.tar"
  cp "$dir/env" "$release/.env"
  profiles=()
  [[ -f $dir/profiles.yaml ]] && profiles=(HUB_PROFILES="$dir/profiles.yaml")
  (
    cd "$release"
    unset COMPOSE_FILE COMPOSE_PROFILES  # the newer release's; the previous one's host setup sets its own
    export HUB_IMAGE=$hub_image PROXY_IMAGE=$proxy_image "${profiles[@]}"
    host_setup "$release" "$release/.env"
    docker compose --project-directory "$release" --env-file "$release/.env" \
      up -d --no-deps --wait --wait-timeout "$WAIT_TIMEOUT" hub proxy
  ) || die "the previous hub did not come up: docker logs ${project}-hub-1"
  hub=$(service_container "$project" hub)
  hub_health "$hub" || die "the previous hub does not answer /hub/health: docker logs $hub"
  say "Rolled back: project $project runs $previous again with the state of $(meta created "$dir")."
  say "Users' servers that ran: $(user_servers "$project" | wc -l) running now."
  say "This checkout is still the newer release: \`git checkout $(meta previous_revision "$dir")\` so that \`make up\` starts what runs."
}

cmd_upgrade() {
  local project hub proxy hub_id proxy_id previous_version previous_revision new_version stamp dir before after
  [[ -f $ENV_FILE ]] || die "no env file $ENV_FILE (ENV_FILE=...): nothing to upgrade; \`make up\` starts a new deployment"
  command -v docker >/dev/null || die "docker is not installed"
  docker info >/dev/null 2>&1 || die "the Docker engine does not answer (docker info)"
  git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1 \
    || die "$ROOT is not a git checkout: the backup keeps the previous release's files from git (git clone the repository)"
  project=$(project_name)
  new_version=$(version)
  hub=$(service_container "$project" hub) proxy=$(service_container "$project" proxy)
  if [[ -z $hub || -z $proxy ]]; then
    if docker service ls -q --filter "label=com.docker.stack.namespace=$project" 2>/dev/null | grep -q .; then
      die "$project is a Swarm stack: \`make swarm-up\` redeploys it (docs/swarm.md); make upgrade is for the compose deployment"
    fi
    die "no hub or proxy container of project $project: \`make up\` starts one (nothing to upgrade)"
  fi
  hub_id=$(docker inspect --format '{{.Image}}' "$hub") proxy_id=$(docker inspect --format '{{.Image}}' "$proxy")
  previous_version=$(label "$hub_id" org.opencontainers.image.version)
  previous_revision=${PREVIOUS:-$(label "$hub_id" org.opencontainers.image.revision)}
  [[ -n $previous_revision ]] || die "the running hub image has no revision label (a release before 1.0.0): name the commit it was built from, e.g. \`make upgrade PREVIOUS=<commit>\` (\`git reflog\` lists the checkouts)"
  previous_revision=$(git -C "$ROOT" rev-parse --verify --quiet "$previous_revision^{commit}") \
    || die "PREVIOUS=${PREVIOUS:-} is not a commit of this repository (git fetch first?)"
  previous_version=${previous_version:-$(git -C "$ROOT" show "$previous_revision:hub/__init__.py" 2>/dev/null | sed -n 's/^__version__ = "\(.*\)"$/\1/p')}
  previous_version=${previous_version:-"before 1.0.0"}
  stamp=$(date -u +%Y%m%dT%H%M%SZ)
  [[ $BACKUP_ROOT = /* ]] || BACKUP_ROOT=$ROOT/$BACKUP_ROOT
  dir=$BACKUP_ROOT/$project-$stamp
  before=$(user_servers "$project")

  step "Upgrading project $project: $previous_version (${previous_revision:0:12}) -> $new_version ($(git -C "$ROOT" rev-parse --short=12 HEAD))"
  step "Keeping the previous images and writing the backup folder $dir"
  mkdir -p "$dir" && chmod 700 "$BACKUP_ROOT" "$dir"
  docker tag "$hub_id" "gpuhub-rollback/hub:$stamp" && docker tag "$proxy_id" "gpuhub-rollback/proxy:$stamp"
  cp "$ENV_FILE" "$dir/env"
  local profiles
  profiles=${HUB_PROFILES:-$(env_value HUB_PROFILES "$ENV_FILE")}
  profiles=${profiles:-./profiles.yaml}
  [[ $profiles = /* ]] || profiles=$ROOT/$profiles
  if [[ -f $profiles ]]; then  # 644: the hub (uid 990) reads it through a bind mount after a rollback
    cp "$profiles" "$dir/profiles.yaml" && chmod 644 "$dir/profiles.yaml"
  fi
  git -C "$ROOT" archive --format=tar -o "$dir/release.tar" "$previous_revision"
  cp "$SELF" "$dir/upgrade.sh" && chmod 700 "$dir/upgrade.sh"  # rollback from any checkout
  cat > "$dir/meta" <<EOF
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
project=$project
previous_release=$previous_version
previous_revision=$previous_revision
hub_rollback_image=gpuhub-rollback/hub:$stamp
proxy_rollback_image=gpuhub-rollback/proxy:$stamp
new_release=$new_version
new_revision=$(git -C "$ROOT" rev-parse HEAD)
user_servers=$(printf '%s' "$before" | awk '{print $2}' | paste -sd, -)
EOF
  say "    previous images kept as gpuhub-rollback/hub:$stamp and gpuhub-rollback/proxy:$stamp"

  step "Image tags in $ENV_FILE"
  migrate_env "$ENV_FILE"

  step "Building the images of $new_version (users' servers and the hub keep running)"
  local build=("${MAKE:-make}" --no-print-directory images ENV_FILE="$ENV_FILE" COMPOSE="${COMPOSE:-docker compose}")
  [[ -z ${GPUHUB_UPGRADE_BUILD:-} ]] || build=(bash -c "$GPUHUB_UPGRADE_BUILD")
  if ! (cd "$ROOT" && "${build[@]}"); then
    cp "$dir/env" "$ENV_FILE"
    die "the build failed; nothing changed (the deployment runs as before, $ENV_FILE restored)"
  fi

  step "Stopping the hub for a consistent copy of its state (servers, notebooks and the proxy keep running)"
  docker stop "$hub" >/dev/null
  step "Backing up the state volumes"
  if ! backup_volumes "$project" "$dir" "$hub_id"; then
    docker start "$hub" >/dev/null; cp "$dir/env" "$ENV_FILE"
    die "the backup failed; the previous hub is started again and nothing changed"
  fi

  step "Recreating hub and proxy with $new_version (the hub migrates its database at start)"
  if ! (
    host_setup "$ROOT" "$ENV_FILE"
    cd "$ROOT"
    "${compose[@]}" run --rm -T --no-deps init
    # the users' network rules first (a release before 1.0.1 had no netguard): the hub waits for them
    "${compose[@]}" up -d --no-deps --wait --wait-timeout "$WAIT_TIMEOUT" netguard
    "${compose[@]}" up -d --no-deps --wait --wait-timeout "$WAIT_TIMEOUT" hub proxy
  ) || ! hub_health "$(service_container "$project" hub)"; then
    "${compose[@]}" logs --no-color --tail 40 hub >&2 || true
    if [[ -n ${NO_AUTO_ROLLBACK:-} ]]; then
      die "the new hub did not come up; to go back: make rollback BACKUP=$dir"
    fi
    say "upgrade: the new hub did not come up: rolling back" >&2
    cp "$dir/env" "$ENV_FILE"
    cmd_rollback "$dir"
    exit 1
  fi
  hub=$(service_container "$project" hub)
  after=$(user_servers "$project")
  local migrated
  # JupyterHub's upgrade_db logs "Backing up <file> => <copy>" and "Upgrading <db url>" (jupyterhub/dbutil.py)
  migrated=$(docker logs "$hub" 2>&1 | grep -E 'Backing up .*jupyterhub\.sqlite|Upgrading sqlite' | sed 's/^.*\] //' | paste -sd';' - || true)
  step "Done: project $project runs $new_version (hub image $(docker inspect --format '{{.Config.Image}}' "$hub"))"
  say "    database: ${migrated:-no migration was needed (the schema was current)}"
  say "    users' servers: $(printf '%s' "$before" | grep -c . || true) ran before, $(printf '%s' "$after" | grep -c . || true) run now"
  if [[ $before != "$after" ]]; then
    say "    changed: $(comm -3 <(printf '%s\n' "$before") <(printf '%s\n' "$after") | tr '\n' ' ')"
  fi
  say "    backup: $dir (state.tar.gz, env, profiles, the previous release's files)"
  say "    to go back: make rollback BACKUP=$dir"
}

case ${1:-} in
  upgrade) cmd_upgrade ;;
  rollback) shift; cmd_rollback "$@" ;;
  migrate-env) [[ -n ${2:-} ]] || die "usage: $0 migrate-env FILE"; migrate_env "$2" ;;
  *) die "usage: $0 upgrade | rollback BACKUP_DIR | migrate-env FILE" ;;
esac
