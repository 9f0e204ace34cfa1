#!/bin/bash
# The mini Slurm cluster, driven from the host.
#
#   cluster.sh up        build the image if needed (offline too) and start the cluster; waits until ready
#   cluster.sh down      remove the container
#   cluster.sh status    sinfo, squeue and the accounting associations
#   cluster.sh logs      daemon logs, sinfo, squeue and sacct (what CI prints when something fails)
#   cluster.sh exec [-u USER] CMD...   run a command inside the cluster (default user: alice)
#
# Environment: SLURMFLOW_MINI_VERSION (Slurm major.minor: 22.05, 24.11 or 26.05; default 24.11),
# SLURMFLOW_MINI_NAME (container; default slurmflow-mini for 24.11, slurmflow-mini-<version> else),
# SLURMFLOW_MINI_SHARED (host folder mounted at the same path inside, for run directories),
# SLURMFLOW_MINI_BASE (base image; default debian:<suite>, built with debootstrap when not present),
# SLURMFLOW_MINI_NO_CACHE=1 (rebuild every layer: a cold start),
# SLURMFLOW_MINI_MEMORY (cgroup: enforce --mem with Slurm's cgroup plugins where the host allows,
# the default; none: no enforcement and no extra capability for the container),
# SLURMFLOW_MINI_GPU_NODES, SLURMFLOW_MINI_GPUS_PER_NODE, SLURMFLOW_MINI_CPU_NODES (the nodes:
# gpu1..N in partition gpu, cpu1..M in partition cpu; default 2, 4 and 1),
# SLURMFLOW_MINI_MOUNTS (host folders, colon-separated, mounted read-only at the same path inside).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# From a checkout, the working tree is mounted at /src (jobs run its slurmflow); from an installed
# wheel (slurmflow/testing/cluster), the installed package is, at /src/slurmflow.
repo=$(cd "$here/../.." && pwd)
if [ -f "$repo/pyproject.toml" ]; then
  src=(-v "$repo:/src:ro")
  default_shared=$repo/.mini
else
  src=(-v "$repo:/src/slurmflow:ro")
  launcher=$(cd "$repo/.." && pwd)/hydra_plugins/slurmflow_launcher
  [ -d "$launcher" ] && src+=(-v "$launcher:/src/hydra_plugins/slurmflow_launcher:ro")
  default_shared=${XDG_CACHE_HOME:-$HOME/.cache}/slurmflow-mini
fi
version=${SLURMFLOW_MINI_VERSION:-24.11}
# The Slurm version is chosen by the Debian suite: no suite carries two Slurm versions.
# debootstrap_script: the host's debootstrap may predate a suite; "forky" is debootstrapped with the
# script of sid (bookworm, trixie and testing are links to it), passed explicitly.
debootstrap_script=
case "$version" in
  22.05) suite=bookworm;;
  24.11) suite=trixie;;
  # forky (Debian 14, testing) ships 26.05.5, as sid does; bookworm's debootstrap has no forky script.
  26.05) suite=forky; debootstrap_script=/usr/share/debootstrap/scripts/sid;;
  *) echo "[cluster] SLURMFLOW_MINI_VERSION=$version: expected 22.05, 24.11 or 26.05" >&2; exit 2;;
esac
if [ "$version" = 24.11 ]; then default_name=slurmflow-mini; else default_name=slurmflow-mini-$version; fi
name=${SLURMFLOW_MINI_NAME:-$default_name}
image=${SLURMFLOW_MINI_IMAGE:-slurmflow/mini-cluster:$version}
base=${SLURMFLOW_MINI_BASE:-debian:$suite}
local_base=slurmflow/debian:$suite
shared=${SLURMFLOW_MINI_SHARED:-$default_shared}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
log() { echo "[cluster] $*" >&2; }
gpu_nodes=${SLURMFLOW_MINI_GPU_NODES:-2} gpus=${SLURMFLOW_MINI_GPUS_PER_NODE:-4} cpu_nodes=${SLURMFLOW_MINI_CPU_NODES:-1}
for v in gpu_nodes:$gpu_nodes gpus:$gpus cpu_nodes:$cpu_nodes; do
  case "${v#*:}" in ''|*[!0-9]*) log "${v%%:*}='${v#*:}': expected a whole number"; exit 2;; esac
done
if [ $((gpu_nodes + cpu_nodes)) -lt 1 ] || [ $((gpu_nodes + cpu_nodes)) -gt 32 ]; then
  log "SLURMFLOW_MINI_GPU_NODES + SLURMFLOW_MINI_CPU_NODES = $((gpu_nodes + cpu_nodes)): expected 1 to 32 nodes"; exit 2
fi
if [ "$gpus" -lt 1 ] || [ "$gpus" -gt 16 ]; then
  log "SLURMFLOW_MINI_GPUS_PER_NODE=$gpus: expected 1 to 16"; exit 2
fi

ensure_docker() {
  docker info >/dev/null 2>&1 && return 0
  if ! command -v dockerd >/dev/null 2>&1; then
    log "installing docker.io"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
  fi
  if ! docker info >/dev/null 2>&1; then
    log "starting dockerd"
    (setsid dockerd >/var/log/slurmflow-dockerd.log 2>&1 &)
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && return 0; sleep 0.5; done
    log "dockerd did not start; see /var/log/slurmflow-dockerd.log"; tail -20 /var/log/slurmflow-dockerd.log >&2; exit 1
  fi
}

# No registry may be reachable: use the base image if present (or the one made here before), else try
# to pull it, else make it from Debian's packages with debootstrap and import it.
ensure_base() {
  if docker image inspect "$base" >/dev/null 2>&1; then echo "$base"; return; fi
  if docker image inspect "$local_base" >/dev/null 2>&1; then echo "$local_base"; return; fi
  if timeout 60 docker pull -q "$base" >/dev/null 2>&1; then echo "$base"; return; fi
  command -v debootstrap >/dev/null 2>&1 || {
    log "installing debootstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  local root; root=$(mktemp -d)
  log "building base image $local_base with debootstrap (no registry reachable)"
  local t0=$SECONDS
  # shellcheck disable=SC2086
  debootstrap --variant=minbase "$suite" "$root" "$mirror" $debootstrap_script >"$root.log" 2>&1 \
    || { tail -20 "$root.log" >&2; exit 1; }
  tar -C "$root" -c . | docker import - "$local_base" >/dev/null
  rm -rf "$root" "$root.log"
  log "base image $local_base made in $((SECONDS - t0)) s"
  echo "$local_base"
}

build() {
  local b; b=$(ensure_base)
  # An installed copy may be read-only: build from a copy of it then (the layers are cached by content).
  local ctx=$here
  if [ ! -w "$here" ]; then ctx=$(mktemp -d); cp -r "$here/." "$ctx"; fi
  mkdir -p "$ctx/.build"
  local ca; ca=$(python3 -c 'import ssl; print(ssl.get_default_verify_paths().cafile or "")' 2>/dev/null || true)
  for f in "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" "$ca" /etc/ssl/certs/ca-certificates.crt; do
    [ -n "$f" ] && [ -s "$f" ] && { cp "$f" "$ctx/.build/host-ca.crt"; break; }
  done
  [ -s "$ctx/.build/host-ca.crt" ] || : > "$ctx/.build/host-ca.crt"
  log "building $image from $b"
  local t0=$SECONDS
  # Host networking for the build only: apt and pip fetch packages; the cluster itself runs offline.
  # --force-rm: the legacy builder otherwise leaves the container of a failed step behind.
  local nocache=(); [ -n "${SLURMFLOW_MINI_NO_CACHE:-}" ] && nocache=(--no-cache)
  docker build -q --force-rm "${nocache[@]}" --network host --build-arg "BASE_IMAGE=$b" \
    --build-arg "SLURM_VERSION=$version" -t "$image" "$ctx" >/dev/null
  log "image $image built in $((SECONDS - t0)) s"
}

dump() {
  echo "===== docker ps"; docker ps -a --filter "name=^${name}$" || true
  echo "===== container output"; docker logs --tail 100 "$name" 2>&1 || true
  local f
  for f in slurmctld slurmdbd $(docker exec "$name" sh -c 'sed "s/^/slurmd-/" /run/cluster-nodes' 2>/dev/null); do
    echo "===== $f.log (tail)"; docker exec "$name" tail -n 60 "/var/log/slurm/$f.log" 2>&1 || true
  done
  echo "===== sinfo"; docker exec "$name" sinfo -N -l 2>&1 || true
  echo "===== squeue"; docker exec "$name" squeue -a 2>&1 || true
  echo "===== sacct"; docker exec "$name" sacct -a -X -S now-2hours -o JobID,User,Account,State,ExitCode,NodeList,Reason%30 2>&1 | tail -n 80 || true
}

up() {
  ensure_docker
  build
  docker rm -f "$name" >/dev/null 2>&1 || true
  mkdir -p "$shared"; chmod 1777 "$shared"
  # A network of the cluster's own, internal (no route out): Slurm needs a non-loopback interface
  # for its address lookups, and the daemons talk to each other only inside the container.
  docker network inspect "$name-net" >/dev/null 2>&1 || docker network create --internal "$name-net" >/dev/null
  # CAP_SYS_ADMIN (not --privileged) lets start-cluster mount the container's own cgroups writable
  # for Slurm's memory and device enforcement; apparmor's default profile would refuse the mounts.
  # One device rule per fake GPU (major 195, NVIDIA's; minors 0..N-1) lets Slurm grant a job its
  # GPUs in the job's devices cgroup and deny it the others (ConstrainDevices): Docker's default rules
  # only allow creating such device files, and a wildcard rule could not be narrowed per job.
  local caps=(--cap-add SYS_ADMIN --security-opt apparmor=unconfined) minor
  for minor in $(seq 0 $((gpu_nodes * gpus - 1))); do caps+=(--device-cgroup-rule "c 195:$minor rwm"); done
  [ "${SLURMFLOW_MINI_MEMORY:-cgroup}" = cgroup ] || caps=()
  local mounts=() m
  IFS=: read -r -a extra <<< "${SLURMFLOW_MINI_MOUNTS:-}"
  for m in "${extra[@]}"; do
    [ -n "$m" ] || continue
    [ -d "$m" ] || { log "SLURMFLOW_MINI_MOUNTS: $m is not a folder"; exit 2; }
    m=$(cd "$m" && pwd); mounts+=(-v "$m:$m:ro")
  done
  docker run -d --name "$name" --hostname mini --network "$name-net" "${caps[@]}" \
    -e "SLURMFLOW_MINI_MEMORY=${SLURMFLOW_MINI_MEMORY:-cgroup}" \
    -e "SLURMFLOW_MINI_GPU_NODES=$gpu_nodes" -e "SLURMFLOW_MINI_GPUS_PER_NODE=$gpus" \
    -e "SLURMFLOW_MINI_CPU_NODES=$cpu_nodes" \
    "${src[@]}" -v "$shared:$shared" "${mounts[@]}" \
    --label org.slurmflow.mini=1 --label "org.slurmflow.mini.shared=$shared" "$image" >/dev/null
  if ! docker exec "$name" cluster-ready --wait "${SLURMFLOW_MINI_TIMEOUT:-180}"; then
    log "cluster did not become ready"; dump >&2; exit 1
  fi
  # The image's Slurm must be the one asked for: a suite moving to another Slurm release (sid does)
  # must fail here, not as puzzling test failures later.
  local got; got=$(docker exec "$name" sinfo -V | awk '{print $2}')
  case "$got" in
    "$version".*) ;;
    *) log "$name runs Slurm '$got', but SLURMFLOW_MINI_VERSION=$version was asked for (image $image," \
         "Debian $suite); rebuild with SLURMFLOW_MINI_NO_CACHE=1 or pick the suite that ships $version"
       exit 1;;
  esac
  log "ready: $name (Slurm $got; memory enforcement: $(docker exec "$name" cat /run/cluster-memory))"
}

case "${1:-}" in
  up) up;;
  down) docker rm -f "$name" >/dev/null 2>&1 || true; docker network rm "$name-net" >/dev/null 2>&1 || true;;
  ready) docker exec "$name" cluster-ready;;
  status)
    docker exec "$name" sinfo -o '%P %a %D %N %T %G'
    docker exec "$name" squeue -a
    docker exec "$name" sacctmgr -n show assoc format=Cluster,Account,User,GrpTRES%30,GrpTRESMins%30,MaxJobs,MaxSubmit;;
  logs) dump;;
  exec)
    shift; user=alice
    if [ "${1:-}" = -u ]; then user=$2; shift 2; fi
    exec docker exec -i -u "$user" "$name" "$@";;
  *) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 2;;
esac
