#!/usr/bin/env bash
# Prepare Incus on this machine for kennel's Incus backend and its tests
# (Debian 12, run as root, no systemd needed).
#
#   - installs incus-base (incusd, incus-user, the incus client; containers
#     only, no QEMU) from bookworm-backports, and dnsmasq-base (incusd will
#     not create even an address-less bridge without it);
#   - gives root the subordinate ids Incus maps containers to
#     (root:1000000:1000000000) and the test user's own uid and gid, so that
#     `raw.idmap` may map them 1:1 (a workspace bind mount keeps its owner);
#   - starts incusd (socket /var/lib/incus/unix.socket, group incus-admin)
#     and incus-user (/var/lib/incus/unix.socket.user, group incus) unless
#     they answer;
#   - storage pool `kennel` as the default profile's root disk, and no
#     network device (kennel's containers need none). The pool is btrfs on a
#     sparse loop file that Incus makes (/var/lib/incus/disks/kennel.img)
#     when the kernel has btrfs: a new container is then a snapshot of the
#     unpacked image (~0.2 s); with `dir` (the fallback) every container
#     unpacks the whole image again (seconds);
#   - a managed bridge `kennelbr0` with a subnet of our choosing
#     (KENNEL_INCUS_SUBNET, 10.187.0.1/24) and NAT: the network of
#     `--network open` sessions (kennel masks it in every other mode). Its
#     existence also keeps incus-user from creating one at start-up with a
#     subnet it picks by pinging random 10.x.y.1 addresses, which fails here;
#   - the image `kennel-test/bookworm`: the e2e base rootfs (scripts/e2e-setup.sh)
#     plus a tiny /sbin/init, in the default project and in the test user's;
#   - the test user's restricted project `user-<uid>`, made here the way
#     incus-user makes it on first contact (same restrictions, a client
#     certificate it proxies with, a default profile with raw.idmap), except
#     that it gets no bridge of its own (incus-user would create one with an
#     automatically picked subnet, pings again) but kennelbr0 as its default
#     profile's eth0;
#   - checks that a container starts and runs a command, as root and as the
#     test user through the user socket.
#
# Idempotent: safe to run any number of times. Quiet unless something fails.
# Run scripts/e2e-setup.sh first (it makes the test user and the base rootfs;
# it also calls this script).
#
#   --fresh   first remove what an earlier run made: instances, images, the
#             user project, its certificate, the pool, the bridge, the default
#             profile's root disk, the subordinate ids it added and, only if an
#             earlier run initialised it, incusd's whole state
#             (/var/lib/incus); then set up again.
#
# Never connect to the user socket as root: incus-user would set up a project
# `user-0` with a bridge of its own, picking the bridge's subnet by pinging.
#
# Environment:
#   KENNEL_E2E_USER            test user name             (default kennel-e2e)
#   KENNEL_E2E_CACHE           cache of the base rootfs   (default /var/cache/kennel-e2e)
#   KENNEL_INCUS_POOL_DRIVER   btrfs or dir, for a new pool (default: btrfs when it works)
set -euo pipefail

E2E_USER=${KENNEL_E2E_USER:-kennel-e2e}
CACHE=${KENNEL_E2E_CACHE:-/var/cache/kennel-e2e}
BASE_TARBALL=$CACHE/rootfs.tar
IMAGE_DIR=$CACHE/incus
ALIAS=kennel-test/bookworm
POOL=kennel
POOL_DRIVER=${KENNEL_INCUS_POOL_DRIVER:-}
# The loop file's size: sparse, it takes only what is written.
POOL_SIZE=15GiB
BRIDGE=kennelbr0
BRIDGE_SUBNET=${KENNEL_INCUS_SUBNET:-10.187.0.1/24}
LOG_DIR=/tmp/kennel-e2e-logs
INCUS_DIR=/var/lib/incus
ADMIN_SOCK=$INCUS_DIR/unix.socket
USER_SOCK=$INCUS_DIR/unix.socket.user
# What this script made that --fresh must know about, kept outside the
# e2e cache (which e2e-setup.sh --fresh removes before calling us).
STATE=/var/lib/kennel-incus-setup
INCUSD_PIDFILE=/run/kennel-incusd.pid
INCUS_USER_PIDFILE=/run/kennel-incus-user.pid
ROOT_SUBID_RANGE="root:1000000:1000000000"

SCRIPT_NAME=incus-setup
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FRESH=0
for arg in "$@"; do
    case $arg in
    --fresh) FRESH=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$arg' (usage: incus-setup.sh [--fresh])" ;;
    esac
done

[[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages, starts daemons)"
mkdir -p "$LOG_DIR" "$STATE"

# The incus client as root always talks to the admin socket.
incus() { command incus --force-local "$@"; }

incusd_ok() { [[ -S $ADMIN_SOCK ]] && incus query /1.0 >/dev/null 2>&1; }

# A pid from one of our pidfiles, if that process is still the named program.
our_pid() {
    local pidfile=$1 comm=$2 pid
    [[ -f $pidfile ]] || return 1
    pid=$(cat "$pidfile")
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm" ]] || return 1
    echo "$pid"
}

stop_pid() {
    local pid=$1
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
    kill -KILL "$pid" 2>/dev/null || true
}

stop_incus_user() {
    local pid
    if pid=$(our_pid "$INCUS_USER_PIDFILE" incus-user); then stop_pid "$pid"; fi
    rm -f "$INCUS_USER_PIDFILE"
}

# ------------------------------------------------------------------ --fresh
if ((FRESH)); then
    log "--fresh: removing what an earlier run made"
    if command -v incus >/dev/null && incusd_ok; then
        stop_incus_user
        if [[ -f $STATE/state-dir-created ]]; then
            # All of Incus's state is ours: stop every instance and the daemon,
            # then remove the state (instances' mounts first).
            incus admin shutdown --timeout 60 >/dev/null 2>&1 || true
            if pid=$(our_pid "$INCUSD_PIDFILE" incusd); then stop_pid "$pid"; fi
            { grep -E " ($INCUS_DIR|/run/incus)/" /proc/mounts || true; } | awk '{print $2}' |
                sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
            # A btrfs pool's loop device.
            for img in "$INCUS_DIR"/disks/*.img; do
                [[ -e $img ]] || continue
                losetup -j "$img" | cut -d: -f1 | while read -r dev; do losetup -d "$dev" 2>/dev/null || true; done
            done
            find "$INCUS_DIR" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
            rm -rf /run/incus /var/cache/incus/* /var/log/incus/*
            rm -f "$INCUSD_PIDFILE" "$STATE/state-dir-created"
        else
            # Someone else's Incus: take away only what we added to it.
            if [[ -f $STATE/user ]]; then
                read -r _ old_uid <"$STATE/user"
                project=user-$old_uid
                if incus project show "$project" >/dev/null 2>&1; then
                    for name in $(incus list --project "$project" -f csv -c n); do
                        incus delete --force --project "$project" "$name" >/dev/null 2>&1 || true
                    done
                    for fp in $(incus image list --project "$project" -f csv -c F); do
                        incus image delete --project "$project" "$fp" >/dev/null 2>&1 || true
                    done
                    printf 'config: {}\ndevices: {}\n' | incus profile edit default --project "$project" >/dev/null 2>&1 || true
                    incus project delete "$project" >/dev/null 2>&1 || true
                fi
                incus config trust remove "$(incus config trust list -f csv -c nf |
                    awk -F, -v n="incus-user-$old_uid" '$1 == n {print $2}')" >/dev/null 2>&1 || true
                rm -rf "${INCUS_DIR:?}/users/$old_uid"
            fi
            # Test instances are named kennel-… (the crate's tests and kennel's).
            for name in $(incus list -f csv -c n | grep '^kennel-' || true); do
                incus delete --force "$name" >/dev/null 2>&1 || true
            done
            incus image delete "$ALIAS" >/dev/null 2>&1 || true
            incus network delete "$BRIDGE" >/dev/null 2>&1 || true
            if [[ $(incus profile device get default root pool 2>/dev/null) == "$POOL" ]]; then
                incus profile device remove default root >/dev/null 2>&1 || true
            fi
            incus storage delete "$POOL" >/dev/null 2>&1 || true
        fi
    fi
    stop_incus_user
    rm -f "$STATE/user"
    # Subordinate ids this script added (one "file line" per line).
    if [[ -f $STATE/subids ]]; then
        while read -r file line; do
            sed -i "\|^$line\$|d" "$file"
        done <"$STATE/subids"
        rm -f "$STATE/subids"
    fi
    rm -rf "$IMAGE_DIR"
fi

# ---------------------------------------------------------------- packages
id -u "$E2E_USER" >/dev/null 2>&1 ||
    die "test user $E2E_USER does not exist: run scripts/e2e-setup.sh (it calls this script)"
[[ -f $BASE_TARBALL ]] || die "$BASE_TARBALL missing: run scripts/e2e-setup.sh (it calls this script)"

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }
if ! installed incus-base || ! installed dnsmasq-base; then
    export DEBIAN_FRONTEND=noninteractive
    if ! installed incus-base; then
        # Incus 6.0 LTS is in Debian 12 only through backports.
        if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
            log "adding bookworm-backports to apt's sources"
            cat >/etc/apt/sources.list.d/kennel-bookworm-backports.sources <<'EOF'
# Written by kennel scripts/incus-setup.sh (Incus 6.0 LTS).
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        fi
        log "installing incus-base from bookworm-backports"
        quiet apt-get update -q
        quiet apt-get install -y -q --no-install-recommends -t bookworm-backports incus-base
    fi
    if ! installed dnsmasq-base; then
        quiet apt-get install -y -q --no-install-recommends dnsmasq-base
    fi
fi
if [[ -z $POOL_DRIVER ]]; then
    POOL_DRIVER=dir
    grep -qw btrfs /proc/filesystems && [[ -e /dev/loop-control ]] && POOL_DRIVER=btrfs
fi
if [[ $POOL_DRIVER == btrfs ]] && ! installed btrfs-progs; then
    export DEBIAN_FRONTEND=noninteractive
    quiet apt-get update -q
    quiet apt-get install -y -q --no-install-recommends btrfs-progs
fi
getent group incus-admin >/dev/null || quiet groupadd --system incus-admin
getent group incus >/dev/null || quiet groupadd --system incus

# --------------------------------------------------- subordinate ids (root)
E2E_UID=$(id -u "$E2E_USER")
E2E_GID=$(id -g "$E2E_USER")
E2E_HOME=$(getent passwd "$E2E_USER" | cut -d: -f6)
SUBIDS_CHANGED=0
add_subid() {
    local file=$1 line=$2
    touch "$file"
    grep -qx "$line" "$file" && return 0
    echo "$line" >>"$file"
    echo "$file $line" >>"$STATE/subids"
    SUBIDS_CHANGED=1
}
# Debian's package adds the range itself when root has none; a machine
# whose package did not (or whose range was removed) gets it here.
grep -q '^root:' /etc/subuid 2>/dev/null || add_subid /etc/subuid "$ROOT_SUBID_RANGE"
grep -q '^root:' /etc/subgid 2>/dev/null || add_subid /etc/subgid "$ROOT_SUBID_RANGE"
# raw.idmap "uid U U / gid G G" goes through newuidmap, which allows root
# only the ids delegated to it here.
add_subid /etc/subuid "root:$E2E_UID:1"
add_subid /etc/subgid "root:$E2E_GID:1"

# ------------------------------------------------------------------ incusd
if ((SUBIDS_CHANGED)) && incusd_ok; then
    # incusd reads the subordinate ids once, at start.
    if pid=$(our_pid "$INCUSD_PIDFILE" incusd); then
        log "restarting incusd (root's subordinate ids changed)"
        stop_pid "$pid"
    else
        log "WARNING: root's subordinate ids changed; restart incusd for raw.idmap to work"
    fi
fi
if ! incusd_ok; then
    [[ -d $INCUS_DIR/database ]] || touch "$STATE/state-dir-created"
    log "starting incusd (log: $LOG_DIR/incusd.log)"
    mkdir -p "$INCUS_DIR"
    (
        # As the package's init script does, within the hard limit (root here
        # lacks CAP_SYS_RESOURCE to raise it).
        ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
        cd /
        exec setsid nohup /usr/libexec/incus/incusd --group incus-admin \
            >>"$LOG_DIR/incusd.log" 2>&1 </dev/null
    ) &
    echo $! >"$INCUSD_PIDFILE"
    if ! /usr/libexec/incus/incusd waitready --timeout=60 >/dev/null 2>&1 || ! incusd_ok; then
        tail -n 30 "$LOG_DIR/incusd.log" >&2 || true
        die "incusd did not become ready within 60 s (see $LOG_DIR/incusd.log)"
    fi
fi

# ------------------------------------------------- pool, profile, bridge
if ! incus storage show "$POOL" >/dev/null 2>&1; then
    if [[ $POOL_DRIVER == btrfs ]] &&
        ! out=$(incus storage create "$POOL" btrfs size="$POOL_SIZE" 2>&1); then
        log "a btrfs pool does not work here, using dir (slower creates): $out"
        POOL_DRIVER=dir
    fi
    [[ $POOL_DRIVER == btrfs ]] || quiet incus storage create "$POOL" dir
fi
if ! incus profile device get default root pool >/dev/null 2>&1; then
    quiet incus profile device add default root disk path=/ pool="$POOL"
fi
if ! incus network show "$BRIDGE" >/dev/null 2>&1; then
    quiet incus network create "$BRIDGE" ipv4.address="$BRIDGE_SUBNET" ipv4.nat=true ipv6.address=none \
        --description "kennel: the network of --network open sessions"
elif [[ "$(incus network get "$BRIDGE" ipv4.address)" != "$BRIDGE_SUBNET" ]]; then
    quiet incus network set "$BRIDGE" ipv4.address="$BRIDGE_SUBNET" ipv4.nat=true
    quiet incus network set "$BRIDGE" --property description="kennel: the network of --network open sessions"
fi

# ------------------------------------------------------------------- image
# The minbase rootfs has no init. /sbin/init (-> /usr/sbin, merged /usr)
# waits, reaps orphans and ends on SIGPWR, which `incus stop` sends. It
# must be in the image: the user project forbids raw.lxc (lxc.init.cmd).
INIT_SCRIPT='#!/bin/sh
# kennel test image init: keep the container alive, reap orphaned
# processes (the shell reaps any child in `wait`), stop on SIGPWR (incus
# stop) or SIGTERM.
trap "exit 0" PWR TERM INT
while :; do
    sleep 2147483647 &
    wait $!
done'
mkdir -p "$IMAGE_DIR"
if [[ ! -f $IMAGE_DIR/rootfs.tar || $BASE_TARBALL -nt $IMAGE_DIR/rootfs.tar ||
    "$(cat "$IMAGE_DIR/init" 2>/dev/null)" != "$INIT_SCRIPT" ]]; then
    log "building the Incus image files in $IMAGE_DIR"
    stage=$(mktemp -d)
    trap 'rm -rf "$stage"' EXIT
    mkdir -p "$stage/usr/sbin"
    printf '%s\n' "$INIT_SCRIPT" >"$stage/usr/sbin/init"
    chmod 755 "$stage/usr/sbin/init"
    # Dates and owners fixed by the base rootfs: the same rootfs gives the
    # same fingerprint.
    epoch=$(stat -c %Y "$BASE_TARBALL")
    printf 'architecture: %s\ncreation_date: %s\nproperties:\n  description: %s\n  os: debian\n  release: bookworm\n' \
        "$(uname -m)" "$epoch" "kennel test image (debootstrap minbase bookworm)" >"$stage/metadata.yaml"
    tar_fixed=(tar --numeric-owner --owner=0 --group=0 --mtime="@$epoch")
    "${tar_fixed[@]}" -C "$stage" -cf "$IMAGE_DIR/meta.tar.tmp" metadata.yaml
    cp "$BASE_TARBALL" "$IMAGE_DIR/rootfs.tar.tmp"
    "${tar_fixed[@]}" -C "$stage" -rf "$IMAGE_DIR/rootfs.tar.tmp" ./usr/sbin/init
    cat "$IMAGE_DIR/meta.tar.tmp" "$IMAGE_DIR/rootfs.tar.tmp" | sha256sum | cut -d' ' -f1 >"$IMAGE_DIR/fingerprint"
    mv "$IMAGE_DIR/meta.tar.tmp" "$IMAGE_DIR/meta.tar"
    mv "$IMAGE_DIR/rootfs.tar.tmp" "$IMAGE_DIR/rootfs.tar"
    printf '%s\n' "$INIT_SCRIPT" >"$IMAGE_DIR/init"
    chmod 644 "$IMAGE_DIR"/*
    rm -rf "$stage"
    trap - EXIT
fi
FINGERPRINT=$(cat "$IMAGE_DIR/fingerprint")

# Import into a project unless its alias already names this very image.
import_image() {
    local project=$1 current
    current=$(incus image info "$ALIAS" --project "$project" 2>/dev/null | awk '/^Fingerprint:/ {print $2}') || true
    [[ $current == "$FINGERPRINT" ]] && return 0
    if [[ -n $current ]]; then
        quiet incus image delete "$current" --project "$project"
    fi
    if incus image info "$FINGERPRINT" --project "$project" >/dev/null 2>&1; then
        quiet incus image alias create "$ALIAS" "$FINGERPRINT" --project "$project"
    else
        log "importing $ALIAS into Incus project $project"
        quiet incus image import "$IMAGE_DIR/meta.tar" "$IMAGE_DIR/rootfs.tar" --alias "$ALIAS" --project "$project"
    fi
}
import_image default

# ---------------------------------------------------- the user's project
PROJECT=user-$E2E_UID
USER_DIR=$INCUS_DIR/users/$E2E_UID
PROJECT_CREATED=0
echo "$E2E_USER $E2E_UID" >"$STATE/user"
quiet usermod -a -G incus "$E2E_USER"
if ! incus project show "$PROJECT" >/dev/null 2>&1; then
    log "creating $E2E_USER's restricted Incus project $PROJECT"
    # incus-user's own settings (cmd/incus-user/server.go), but networks:
    # only the address-less bridge.
    quiet incus project create "$PROJECT" \
        -c features.images=true -c features.networks=false -c features.networks.zones=true \
        -c features.profiles=true -c features.storage.volumes=true -c features.storage.buckets=true \
        -c restricted=true -c restricted.containers.nesting=allow \
        -c restricted.devices.disk=allow -c restricted.devices.disk.paths="$E2E_HOME" \
        -c restricted.devices.gpu=allow \
        -c restricted.idmap.uid="$E2E_UID" -c restricted.idmap.gid="$E2E_GID" \
        -c restricted.networks.access="$BRIDGE"
    PROJECT_CREATED=1
fi
# Disks under the user's home, as incus-user allows, and where the e2e
# suite keeps its workspaces and kennel's data (/var/tmp/kennel-e2e) and
# the test user's runtime directory (kennel's proxy sockets): an
# administrator's choice for these test runs, as a user whose repositories
# or runtime directory live elsewhere would ask theirs to make.
DISK_PATHS="$E2E_HOME,/var/tmp/kennel-e2e,/run/user/$E2E_UID"
if [[ "$(incus project get "$PROJECT" restricted.devices.disk.paths)" != "$DISK_PATHS" ]]; then
    quiet incus project set "$PROJECT" restricted.devices.disk.paths="$DISK_PATHS"
fi
# Its default profile as incus-user writes it: the user's own ids mapped to
# themselves (workspace bind mounts keep their owner), root disk in our pool,
# eth0 on the bridge (as a user's usual Incus has it on incusbr0).
if [[ "$(incus profile get default raw.idmap --project "$PROJECT")" != \
    "$(printf 'uid %s %s\ngid %s %s' "$E2E_UID" "$E2E_UID" "$E2E_GID" "$E2E_GID")" ||
    "$(incus profile device get default root pool --project "$PROJECT" 2>/dev/null)" != "$POOL" ||
    "$(incus profile device get default eth0 network --project "$PROJECT" 2>/dev/null)" != "$BRIDGE" ]]; then
    printf 'description: Default Incus profile\nconfig:\n  raw.idmap: |-\n    uid %s %s\n    gid %s %s\ndevices:\n  root:\n    type: disk\n    path: /\n    pool: %s\n  eth0:\n    type: nic\n    name: eth0\n    network: %s\n' \
        "$E2E_UID" "$E2E_UID" "$E2E_GID" "$E2E_GID" "$POOL" "$BRIDGE" >"$STATE/user-profile.yaml"
    quiet incus profile edit default --project "$PROJECT" <"$STATE/user-profile.yaml"
fi
# The certificate incus-user presents for this user, trusted for the
# project alone.
if [[ ! -f $USER_DIR/client.crt || ! -f $USER_DIR/client.key ]]; then
    mkdir -p "$USER_DIR"
    chmod 700 "$USER_DIR"
    quiet openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:secp384r1 -nodes -days 3650 \
        -subj "/O=Incus/CN=$E2E_USER@incus-user" \
        -keyout "$USER_DIR/client.key" -out "$USER_DIR/client.crt"
    chmod 600 "$USER_DIR/client.key"
fi
cert_fp=$(openssl x509 -in "$USER_DIR/client.crt" -noout -fingerprint -sha256 | cut -d= -f2 | tr -d : | tr 'A-F' 'a-f')
if ! incus config trust show "$cert_fp" >/dev/null 2>&1; then
    quiet incus config trust add-certificate "$USER_DIR/client.crt" --restricted \
        --projects "$PROJECT" --name "incus-user-$E2E_UID"
fi
import_image "$PROJECT"

# -------------------------------------------------------------- incus-user
as_user() {
    runuser -u "$E2E_USER" -- env -i HOME="$E2E_HOME" USER="$E2E_USER" LOGNAME="$E2E_USER" \
        PATH=/usr/local/bin:/usr/bin:/bin "$@"
}
user_sock_ok() { [[ -S $USER_SOCK ]] && as_user incus query /1.0 >/dev/null 2>&1; }
# incus-user reads the list of projects once, at start: one started before
# the project existed would set the user up itself (and make a bridge).
# (A socket file alone proves nothing: a killed incus-user leaves it.)
if ((PROJECT_CREATED)); then
    if our_pid "$INCUS_USER_PIDFILE" incus-user >/dev/null; then
        stop_incus_user
    elif pgrep -x incus-user >/dev/null; then
        die "incus-user is running but not started by this script: restart it now that project $PROJECT exists"
    fi
fi
if ! our_pid "$INCUS_USER_PIDFILE" incus-user >/dev/null && ! user_sock_ok; then
    log "starting incus-user (log: $LOG_DIR/incus-user.log)"
    rm -f "$USER_SOCK"
    (
        cd /
        exec setsid nohup /usr/libexec/incus/incus-user --group incus \
            >>"$LOG_DIR/incus-user.log" 2>&1 </dev/null
    ) &
    echo $! >"$INCUS_USER_PIDFILE"
    for _ in $(seq 1 40); do
        user_sock_ok && break
        sleep 0.25
    done
fi

# ------------------------------------------------------------------ checks
check() {
    local what=$1; shift
    local out
    if ! out=$("$@" 2>&1); then
        printf 'incus-setup: ERROR: %s does not work: %s\n%s\n' "$what" "$*" "$out" >&2
        exit 1
    fi
}
check_container() {
    local name=kennel-setup-check-$$
    incus launch "$ALIAS" "$name" --ephemeral --quiet &&
        incus exec "$name" -- true &&
        incus delete --force "$name"
}
check "a container as root" check_container
user_check() {
    local name=kennel-setup-check-$$
    as_user incus launch "$ALIAS" "$name" --ephemeral --quiet &&
        as_user incus exec "$name" --user "$E2E_UID" --group "$E2E_GID" -- true &&
        as_user incus delete --force "$name"
}
check "$E2E_USER's container through $USER_SOCK" user_check

echo "incus: ready ($(incus query /1.0 | sed -n 's/.*"server_version": "\([^"]*\)".*/\1/p'), pool $POOL ($(incus storage show "$POOL" | awk '/^driver:/ {print $2}')), $ADMIN_SOCK group incus-admin, $USER_SOCK group incus for $E2E_USER (project $PROJECT), image $ALIAS)"
