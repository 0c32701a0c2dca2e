#!/usr/bin/env bash
# Prepare this machine for kennel's end-to-end tests (Debian 12, run as root).
#
#   - installs the Debian packages the tests need (only when missing);
#   - starts dockerd when `docker info` fails;
#   - configures Podman (runc, cgroupfs, file events) and starts the rootful
#     Podman API service on /run/podman/podman.sock, usable by group
#     `kennel-podman`;
#   - creates the non-root test user `kennel-e2e` (groups docker and
#     kennel-podman, subuid/subgid ranges, XDG_RUNTIME_DIR);
#   - (the network tests make their own test hosts at run time: network
#     namespace kennel-e2e-net behind a veth pair, 198.18.0.0/24 and
#     2001:2::/64, see crates/kennel/tests/e2e/network.rs);
#   - installs Claude Code on the host (npm, into /usr/local/lib/kennel-e2e-agents,
#     linked as /usr/local/bin/claude) for the native test of an agent at work;
#   - builds the local base image once (debootstrap minbase bookworm) and
#     imports it as kennel-test/bookworm:latest into Docker, rootful Podman and
#     the test user's rootless Podman;
#   - sets up Incus (scripts/incus-setup.sh) and a single-node Kubernetes
#     cluster (scripts/k8s-build.sh once, then scripts/k8s-up.sh), with a
#     namespace and ~/.kube/config of the test user's own and the base image
#     in the node's containerd.
#
# Idempotent: safe to run any number of times. Quiet unless something fails.
#
#   --fresh   first remove what an earlier run made: the test user, its home,
#             runtime directory and rootless podman storage, the cached base
#             rootfs and test CA, Claude Code as installed for the native tests, and the
#             base image and every image kennel built in
#             Docker and rootful Podman, the Kubernetes cluster's state (its
#             binaries, a build cache, stay); then set up again.
#             This is how to prove that a fresh machine passes `.ci/run`.
#
# Docker: whatever Docker answers `docker info` is used as it is. Otherwise a
# `dockerd` already installed (Debian's docker.io, Docker's own packages, a
# static binary) is started; only when there is none is Debian's docker.io
# installed. A docker client alone (e.g. /usr/local/bin/docker) is kept.
# Environment:
#   KENNEL_E2E_USER       test user name            (default kennel-e2e)
#   KENNEL_E2E_CACHE      cache for the base rootfs (default /var/cache/kennel-e2e)
#   KENNEL_E2E_IMAGE      base image reference      (default kennel-test/bookworm:latest)
#   KENNEL_E2E_MIRROR     Debian mirror             (default http://deb.debian.org/debian)
set -euo pipefail

E2E_USER=${KENNEL_E2E_USER:-kennel-e2e}
E2E_HOME=/home/$E2E_USER
CACHE=${KENNEL_E2E_CACHE:-/var/cache/kennel-e2e}
AGENTS_PREFIX=/usr/local/lib/kennel-e2e-agents
IMAGE=${KENNEL_E2E_IMAGE:-kennel-test/bookworm:latest}
MIRROR=${KENNEL_E2E_MIRROR:-http://deb.debian.org/debian}
PODMAN_GROUP=kennel-podman
PODMAN_SOCK=/run/podman/podman.sock
LOG_DIR=/tmp/kennel-e2e-logs
SUBID_START=200000
SUBID_COUNT=65536

PACKAGES=(podman runc uidmap debootstrap tmux slirp4netns fuse-overlayfs
          iproute2 bubblewrap catatonit curl git ca-certificates python3 util-linux
          gcc libseccomp-dev pkg-config openssl ipset)

SCRIPT_NAME=e2e-setup
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FRESH=0
for arg in "$@"; do
    case $arg in
    --fresh) FRESH=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$arg' (usage: e2e-setup.sh [--fresh])" ;;
    esac
done

[[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages, starts daemons, creates a user)"
mkdir -p "$LOG_DIR"

# ------------------------------------------------------------------ --fresh
if ((FRESH)); then
    log "--fresh: removing the test user, its runtime dir and podman storage, and the cached base image"
    if uid=$(id -u "$E2E_USER" 2>/dev/null); then
        # Everything the user runs (its podman service, pause process,
        # conmons, tmux servers) must go before its files can.
        pkill -KILL -u "$uid" 2>/dev/null || true
        sleep 0.5
        # Rootless podman's overlay storage holds files owned by sub-uids and
        # may hold mounts: unmount anything under the home and runtime dir.
        { grep -E " (/home/$E2E_USER|/run/user/$uid)/" /proc/mounts || true; } | awk '{print $2}' |
            sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
        userdel --remove "$E2E_USER" >/dev/null 2>&1 || true
        rm -rf "/run/user/$uid"
    fi
    rm -rf "$E2E_HOME"
    sed -i "/^$E2E_USER:/d" /etc/subuid /etc/subgid 2>/dev/null || true
    rm -rf "$CACHE"
    # Claude Code as installed below for the native tests (a claude of the
    # machine's own, elsewhere, is left alone).
    if [[ "$(readlink /usr/local/bin/claude 2>/dev/null)" == "$AGENTS_PREFIX"/* ]]; then
        rm -f /usr/local/bin/claude
    fi
    rm -rf "$AGENTS_PREFIX"
    # The base image and every image kennel built go below, once the
    # engines answer (a fresh machine has none of them).
fi

# ---------------------------------------------------------------- packages
missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    quiet apt-get update -q
    quiet apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# ------------------------------------------------------------------ docker
if ! docker info >/dev/null 2>&1 && ! command -v dockerd >/dev/null; then
    # No daemon installed (perhaps only a client): Debian's engine. Its
    # `docker` client lands in /usr/bin and may be shadowed by another one
    # earlier in PATH, which is fine: clients negotiate the API version.
    log "no dockerd here: installing docker.io"
    export DEBIAN_FRONTEND=noninteractive
    quiet apt-get update -q
    quiet apt-get install -y -q --no-install-recommends docker.io
fi
if ! command -v docker >/dev/null; then
    die "dockerd is installed but no docker client is: install docker.io or docker-ce-cli"
fi
# Docker's own packages and static installs may not make the group whose
# members may use the socket (dockerd gives the socket to it when it exists).
getent group docker >/dev/null || quiet groupadd --system docker
if ! docker info >/dev/null 2>&1; then
    log "starting dockerd (log: $LOG_DIR/dockerd.log)"
    setsid nohup dockerd >"$LOG_DIR/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || {
        tail -n 30 "$LOG_DIR/dockerd.log" >&2 || true
        die "dockerd did not become ready within 60 s (see $LOG_DIR/dockerd.log)"
    }
fi

# ------------------------------------------------------------------ podman
# crun refuses hosts whose cgroups are hybrid v1/v2; runc works. Rootless
# podman reads the same file from /etc.
CONF=/etc/containers/containers.conf
# Container ulimits must stay at or below the host's hard limits: root here
# lacks CAP_SYS_RESOURCE, and podman's default (nofile=1048576, nproc) makes
# runc fail with "error setting rlimit type 7: operation not permitted".
# conmon runs with nproc capped at 32768, hence the cap.
NOFILE=$(ulimit -Hn); [[ $NOFILE == unlimited ]] && NOFILE=1048576
NPROC=$(ulimit -Hu); { [[ $NPROC == unlimited ]] || ((NPROC > 32768)); } && NPROC=32768
WANT_CONF="# Written by kennel scripts/e2e-setup.sh
[containers]
default_ulimits = [\"nofile=$NOFILE:$NOFILE\", \"nproc=$NPROC:$NPROC\"]

[engine]
runtime = \"runc\"
cgroup_manager = \"cgroupfs\"
events_logger = \"file\""
mkdir -p /etc/containers
if [[ ! -f $CONF ]] || [[ "$(cat "$CONF")" != "$WANT_CONF" ]]; then
    if [[ -f $CONF ]] && ! grep -q 'kennel scripts/e2e-setup.sh' "$CONF"; then
        cp -a "$CONF" "$CONF.kennel-bak"
        log "replaced $CONF (previous one saved as $CONF.kennel-bak)"
    fi
    printf '%s\n' "$WANT_CONF" >"$CONF"
    CONF_CHANGED=1
fi

getent group "$PODMAN_GROUP" >/dev/null || quiet groupadd --system "$PODMAN_GROUP"

podman_api_ok() {
    curl -fsS --max-time 5 --unix-socket "$PODMAN_SOCK" http://d/_ping >/dev/null 2>&1
}
SERVICE_PIDFILE=/run/kennel-e2e-podman-service.pid
if [[ ${CONF_CHANGED:-0} == 1 && -f $SERVICE_PIDFILE ]]; then
    # Our service runs with the old configuration: restart it.
    pid=$(cat "$SERVICE_PIDFILE")
    if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == podman ]]; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    fi
    rm -f "$SERVICE_PIDFILE"
fi
service_is_ours() {
    [[ -f $SERVICE_PIDFILE ]] && [[ $(cat "/proc/$(cat "$SERVICE_PIDFILE")/comm" 2>/dev/null) == podman ]]
}
if podman_api_ok && ! service_is_ours; then
    # A service this script did not start: one kennel started on demand
    # (as root, with an idle timeout). It would exit in the middle of the
    # tests, and the next root kennel's would be root's alone: replace it.
    log "replacing the podman API service on $PODMAN_SOCK that this script did not start"
    pkill -f "podman system service .*unix://$PODMAN_SOCK" 2>/dev/null || true
    for _ in $(seq 1 20); do podman_api_ok || break; sleep 0.5; done
fi
if ! podman_api_ok; then
    log "starting the rootful podman API service on $PODMAN_SOCK (log: $LOG_DIR/podman-service.log)"
    mkdir -p /run/podman
    rm -f "$PODMAN_SOCK"
    # From /: the service and its conmons keep this working directory, and
    # a clone that is removed later would take it away ("Failed to get
    # working directory").
    (cd / && exec setsid nohup podman system service --time=0 "unix://$PODMAN_SOCK" \
        >"$LOG_DIR/podman-service.log" 2>&1 </dev/null) &
    echo $! >"$SERVICE_PIDFILE"
    for _ in $(seq 1 60); do
        [[ -S $PODMAN_SOCK ]] && podman_api_ok && break
        sleep 0.5
    done
    podman_api_ok || {
        tail -n 30 "$LOG_DIR/podman-service.log" >&2 || true
        die "rootful podman API service did not answer on $PODMAN_SOCK within 30 s"
    }
fi
chmod 755 /run/podman
chgrp "$PODMAN_GROUP" "$PODMAN_SOCK"
chmod 660 "$PODMAN_SOCK"

# --------------------------------------------------------------- test user
if ! id -u "$E2E_USER" >/dev/null 2>&1; then
    quiet useradd --create-home --home-dir "$E2E_HOME" --shell /bin/bash \
        --groups "docker,$PODMAN_GROUP" "$E2E_USER"
else
    quiet usermod -a -G "docker,$PODMAN_GROUP" "$E2E_USER"
fi
mkdir -p "$E2E_HOME"
chown "$E2E_USER:" "$E2E_HOME"
E2E_UID=$(id -u "$E2E_USER")
E2E_GID=$(id -g "$E2E_USER")
for f in /etc/subuid /etc/subgid; do
    touch "$f"
    if ! grep -q "^$E2E_USER:" "$f"; then
        # Pick a range that does not overlap the existing ones.
        start=$SUBID_START
        while read -r s c; do
            if ((start < s + c && s < start + SUBID_COUNT)); then start=$((s + c)); fi
        done < <(awk -F: 'NF==3 {print $2, $3}' "$f" | sort -n)
        echo "$E2E_USER:$start:$SUBID_COUNT" >>"$f"
    fi
done
RUNTIME_DIR=/run/user/$E2E_UID
# The rootless API socket goes in $RUNTIME_DIR/podman/, which podman does not
# create for `podman system service unix://…` (bind fails with ENOENT).
mkdir -p "$RUNTIME_DIR/podman"
chown "$E2E_UID:$E2E_GID" "$RUNTIME_DIR" "$RUNTIME_DIR/podman"
chmod 700 "$RUNTIME_DIR" "$RUNTIME_DIR/podman"
# Rootless podman's slirp4netns opens /dev/net/tun as the user.
[[ -e /dev/net/tun ]] && chmod 666 /dev/net/tun

as_user() {
    runuser -u "$E2E_USER" -- env -i HOME="$E2E_HOME" USER="$E2E_USER" LOGNAME="$E2E_USER" \
        PATH=/usr/local/bin:/usr/bin:/bin XDG_RUNTIME_DIR="$RUNTIME_DIR" "$@"
}
# Group membership changes and new subuid ranges take effect for rootless
# podman only after its pause process is restarted.
as_user podman system migrate >/dev/null 2>&1 || true

# Rootless podman falls back to the vfs storage driver here, which copies the
# whole image for every container (seconds per start). The kernel's own
# overlayfs works unprivileged since Linux 5.13. A store already created with
# vfs must be reset (its images are imported again below).
STORAGE_CONF=$E2E_HOME/.config/containers/storage.conf
if ! grep -qs '^driver = "overlay"' "$STORAGE_CONF"; then
    log "switching $E2E_USER's rootless podman storage to overlay"
    pkill -u "$E2E_USER" -f 'podman system service' 2>/dev/null || true
    as_user mkdir -p "$E2E_HOME/.config/containers"
    printf '[storage]\ndriver = "overlay"\n' >"$STORAGE_CONF"
    chown "$E2E_USER:" "$STORAGE_CONF"
    as_user podman system reset --force >/dev/null 2>&1 || true
fi
# Where the store is, written out: the tests point CONTAINERS_STORAGE_CONF
# here, so that a rootless API service kennel starts from inside a test (when
# the one below has died: podman 4.3 can crash in readConmonPipeData) uses
# the user's store, not one under the test's XDG_DATA_HOME.
if ! grep -qs '^rootless_storage_path = ' "$STORAGE_CONF"; then
    sed -i '/^graphroot = /d; /^runroot = /d' "$STORAGE_CONF"
    printf 'rootless_storage_path = "%s"\nrunroot = "%s"\n' \
        "$E2E_HOME/.local/share/containers/storage" "/run/user/$E2E_UID/containers" >>"$STORAGE_CONF"
fi
# The same store as graphroot too: a service started with
# CONTAINERS_STORAGE_CONF (podman 4.3) fails every commit with "graphroot
# must be set" without it (a devcontainer build's stages are commits).
if ! grep -qs '^graphroot = ' "$STORAGE_CONF"; then
    printf 'graphroot = "%s"\n' "$E2E_HOME/.local/share/containers/storage" >>"$STORAGE_CONF"
fi

# -------------------------------------------------------------- base image
ROOTFS=$CACHE/rootfs
TARBALL=$CACHE/rootfs.tar
mkdir -p "$CACHE"
chmod 755 "$CACHE"
if [[ ! -f $CACHE/rootfs.done ]]; then
    log "building the base rootfs with debootstrap (log: $LOG_DIR/debootstrap.log)"
    rm -rf "$ROOTFS" "$TARBALL"
    if ! debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >"$LOG_DIR/debootstrap.log" 2>&1; then
        tail -n 30 "$LOG_DIR/debootstrap.log" >&2 || true
        die "debootstrap failed (see $LOG_DIR/debootstrap.log)"
    fi
    # Keep the image small and reproducible-ish.
    rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
    tar --numeric-owner -C "$ROOTFS" -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
    chmod 644 "$TARBALL"
    touch "$CACHE/rootfs.done"
fi
[[ -f $TARBALL ]] || { rm -f "$CACHE/rootfs.done"; die "$TARBALL missing; run again to rebuild"; }

if ((FRESH)); then
    for engine in docker podman; do
        { "$engine" images -q --filter label=dev.kennel.managed=true || true; } | sort -u |
            xargs -r "$engine" image rm -f >/dev/null 2>&1 || true
        "$engine" image rm -f "$IMAGE" >/dev/null 2>&1 || true
    done
fi
if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "importing $IMAGE into docker"
    quiet docker import "$TARBALL" "$IMAGE"
fi
if ! podman image exists "$IMAGE"; then
    log "importing $IMAGE into rootful podman"
    quiet podman import "$TARBALL" "$IMAGE"
fi
if ! as_user podman image exists "$IMAGE" 2>/dev/null; then
    log "importing $IMAGE into $E2E_USER's rootless podman"
    quiet as_user podman import "$TARBALL" "$IMAGE"
fi

# The user's rootless podman API service (what `systemctl --user enable
# podman.socket` gives a real user). Started here with the user's plain
# environment: a service that kennel would start from inside a test inherits
# the test's XDG_DATA_HOME/XDG_CONFIG_HOME and so a different, empty image
# store.
ROOTLESS_SOCK=$RUNTIME_DIR/podman/podman.sock
rootless_api_ok() {
    as_user curl -fsS --max-time 5 --unix-socket "$ROOTLESS_SOCK" http://d/_ping >/dev/null 2>&1
}
if ! rootless_api_ok; then
    log "starting $E2E_USER's rootless podman API service on $ROOTLESS_SOCK (log: $LOG_DIR/podman-rootless-service.log)"
    touch "$LOG_DIR/podman-rootless-service.log"
    chown "$E2E_USER:" "$LOG_DIR/podman-rootless-service.log"
    (cd / && as_user setsid nohup podman system service --time=0 "unix://$ROOTLESS_SOCK" \
        >>"$LOG_DIR/podman-rootless-service.log" 2>&1 </dev/null) &
    for _ in $(seq 1 60); do
        rootless_api_ok && break
        sleep 0.5
    done
    rootless_api_ok || {
        tail -n 30 "$LOG_DIR/podman-rootless-service.log" >&2 || true
        die "rootless podman API service of $E2E_USER did not answer on $ROOTLESS_SOCK within 30 s"
    }
fi

# ------------------------------------------------------- agents on the host
# The native backend runs the agent installed on the host: the native test of
# a real agent at work (agents_at_work) needs Claude Code there. It goes into
# a prefix of its own, linked from /usr/local/bin unless a claude is there.
if ! command -v claude >/dev/null 2>&1; then
    log "installing Claude Code for the native tests into $AGENTS_PREFIX"
    quiet npm install -g --prefix "$AGENTS_PREFIX" --no-fund --no-audit --no-update-notifier \
        @anthropic-ai/claude-code
    ln -sf "$AGENTS_PREFIX/bin/claude" /usr/local/bin/claude
fi

# ------------------------------------------------------------------- incus
# Incus for the Incus backend (daemons, pool, the base image as
# kennel-test/bookworm, the test user's project): scripts/incus-setup.sh,
# with --fresh when this run has it. It needs the test user and the base
# rootfs made above.
incus_args=()
((FRESH)) && incus_args=(--fresh)
KENNEL_E2E_USER=$E2E_USER KENNEL_E2E_CACHE=$CACHE \
    bash "$(dirname "${BASH_SOURCE[0]}")/incus-setup.sh" "${incus_args[@]}"
# ------------------------------------------------------------- incus (end)

# -------------------------------------------------------------- kubernetes
# A real single-node cluster for the Kubernetes backend: its binaries are
# built from source once and cached by version (scripts/k8s-build.sh, kept
# by --fresh: it is a build cache, like cargo's), the cluster's state is
# made again with --fresh (scripts/k8s-up.sh). The test user gets a
# namespace of its own and a kubeconfig for it, as a team member would; the
# base image goes into the node's containerd (no registry is reachable).
k8s_args=()
((FRESH)) && k8s_args=(--fresh)
K8S_BIN=$(bash "$(dirname "${BASH_SOURCE[0]}")/k8s-build.sh")
k8s_user_config=$(bash "$(dirname "${BASH_SOURCE[0]}")/k8s-up.sh" "${k8s_args[@]}" \
    --user "$E2E_USER:$E2E_USER" 2>"$LOG_DIR/k8s-up.log") ||
    { cat "$LOG_DIR/k8s-up.log" >&2; die "the Kubernetes cluster did not start (scripts/k8s-up.sh)"; }
k8s_ctr=("$K8S_BIN/ctr" --address /run/kennel-k8s/containerd.sock -n k8s.io)
if ! "${k8s_ctr[@]}" images ls -q 2>/dev/null | grep -qx "docker.io/$IMAGE"; then
    docker save "$IMAGE" | "${k8s_ctr[@]}" images import - >/dev/null 2>&1 ||
        die "cannot import $IMAGE into the Kubernetes node's containerd"
fi
install -d -o "$E2E_USER" -g "$E2E_USER" -m 0700 "$E2E_HOME/.kube"
install -o "$E2E_USER" -g "$E2E_USER" -m 0600 "$k8s_user_config" "$E2E_HOME/.kube/config"
# kennel keeps agent homes (claims) on purpose; the tests' homes are each
# run's own, so a new run starts without the last run's, or the Pods and
# Sandboxes an interrupted run left.
"$K8S_BIN/kubectl" --kubeconfig /var/lib/kennel-k8s/admin.kubeconfig -n "$E2E_USER" \
    delete sandboxes.agents.x-k8s.io,pods,pvc -l app.kubernetes.io/managed-by=kennel \
    --wait=false >/dev/null 2>&1 || true
# ---------------------------------------------------------- kubernetes (end)

# ------------------------------------------------------------------ checks
check() {
    local what=$1; shift
    local out
    if ! out=$("$@" 2>&1); then
        printf 'e2e-setup: ERROR: %s does not work: %s\n%s\n' "$what" "$*" "$out" >&2
        case $what in
        "rootless podman")
            cat >&2 <<EOF
e2e-setup: hints: $E2E_USER needs entries in /etc/subuid and /etc/subgid, newuidmap/newgidmap
  (package uidmap) setuid, /dev/net/tun mode 0666 (slirp4netns), XDG_RUNTIME_DIR=$RUNTIME_DIR
  owned by the user, and runtime="runc" in $CONF. Try as the user: podman --log-level=debug run --rm $IMAGE true
EOF
            ;;
        esac
        exit 1
    fi
}
check "docker (as $E2E_USER)" as_user docker run --rm "$IMAGE" true
check "rootful podman (as $E2E_USER through $PODMAN_SOCK)" \
    as_user podman --remote --url "unix://$PODMAN_SOCK" run --rm "$IMAGE" true
check "rootless podman" as_user podman run --rm "$IMAGE" true
check "Claude Code on the host (as $E2E_USER)" as_user claude --version
# A pod of the test user's, run as the user with kennel's restrictions:
# k8s_pod NAME LABEL COMMAND...; k8s_done NAME SECONDS waits that long for it
# to end and fails (printing its log) unless it succeeded.
k8s_pod() {
    local name=$1 label=$2
    shift 2
    as_user "$K8S_BIN/kubectl" delete pod "$name" --now --ignore-not-found >/dev/null
    as_user "$K8S_BIN/kubectl" run "$name" --labels "$label" --image "docker.io/$IMAGE" \
        --image-pull-policy Never --restart Never \
        --overrides '{"spec":{"securityContext":{"runAsUser":'"$E2E_UID"',"runAsNonRoot":true,"seccompProfile":{"type":"RuntimeDefault"}},"automountServiceAccountToken":false}}' \
        --command -- "$@" >/dev/null
}
k8s_done() {
    local phase
    for _ in $(seq 1 $(($2 * 2))); do
        phase=$(as_user "$K8S_BIN/kubectl" get pod "$1" -o jsonpath='{.status.phase}')
        [[ $phase == Succeeded || $phase == Failed ]] && break
        sleep 0.5
    done
    if [[ $phase != Succeeded ]]; then
        echo "pod $1: ${phase:-no phase}"
        as_user "$K8S_BIN/kubectl" logs "$1"
        return 1
    fi
}
k8s_smoke() {
    k8s_pod kennel-e2e-setup-check kennel-e2e-check=smoke id -u
    k8s_done kennel-e2e-setup-check 90
    [[ $(as_user "$K8S_BIN/kubectl" logs kennel-e2e-setup-check) == "$E2E_UID" ]]
    as_user "$K8S_BIN/kubectl" delete pod kennel-e2e-setup-check --now >/dev/null
}
check "Kubernetes (a pod in namespace $E2E_USER, as $E2E_USER)" k8s_smoke
# NetworkPolicies are enforced (kube-router): a Pod under a policy that
# denies its egress loses the node's address (the kubelet's port) within
# seconds of starting, and a Pod under none keeps it.
k8s_policy() {
    local node_ip kubectl=("$K8S_BIN/kubectl")
    # The node's address (the test user may not read nodes).
    node_ip=$("$K8S_BIN/kubectl" --kubeconfig /var/lib/kennel-k8s/admin.kubeconfig get node \
        kennel-node -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
    [[ -n $node_ip ]] || return 1
    printf '%s\n' 'apiVersion: networking.k8s.io/v1' 'kind: NetworkPolicy' \
        'metadata: {name: kennel-e2e-check-deny-egress}' \
        'spec: {podSelector: {matchLabels: {kennel-e2e-check: closed}}, policyTypes: [Egress], egress: []}' |
        as_user "${kubectl[@]}" apply -f - >/dev/null
    local try="timeout 2 bash -c 'exec 3<>/dev/tcp/$node_ip/10250' 2>/dev/null"
    k8s_pod kennel-e2e-policy-closed kennel-e2e-check=closed bash -c \
        "for i in \$(seq 120); do $try || { echo blocked after \$i tries; exit 0; }; sleep 0.5; done; echo never blocked; exit 1"
    k8s_pod kennel-e2e-policy-open kennel-e2e-check=open bash -c "sleep 5; $try && echo reached"
    k8s_done kennel-e2e-policy-closed 120
    k8s_done kennel-e2e-policy-open 120
    as_user "${kubectl[@]}" logs kennel-e2e-policy-closed | grep '^blocked after'
    as_user "${kubectl[@]}" logs kennel-e2e-policy-open | grep -qx reached
    as_user "${kubectl[@]}" delete pod kennel-e2e-policy-open kennel-e2e-policy-closed --now >/dev/null
    as_user "${kubectl[@]}" delete networkpolicy kennel-e2e-check-deny-egress >/dev/null
}
check "Kubernetes NetworkPolicy enforcement (kube-router)" k8s_policy

echo "docker: ready ($(docker version --format '{{.Server.Version}}' 2>/dev/null), image $IMAGE)"
echo "podman: ready (rootful, $PODMAN_SOCK, group $PODMAN_GROUP, image $IMAGE)"
echo "podman-rootless: ready (user $E2E_USER uid $E2E_UID, $ROOTLESS_SOCK, image $IMAGE)"
echo "kubernetes: ready ($("$K8S_BIN/kubectl" version --client -o json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])'), node kennel-node, namespace $E2E_USER, $E2E_HOME/.kube/config, image docker.io/$IMAGE)"
