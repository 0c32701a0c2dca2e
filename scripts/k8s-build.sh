#!/usr/bin/env bash
# Build the binaries of a single-node Kubernetes cluster from source, once,
# into a cache outside the checkout (keyed by the versions below), for the
# Kubernetes backend's end-to-end tests. No prebuilt Kubernetes is reachable
# from these machines; the Go module proxy is, and it serves every piece:
#
#   k8s.io/kubernetes   kube-apiserver, kube-controller-manager,
#                       kube-scheduler, kubelet, kubectl (its staging
#                       modules, k8s.io/api and the rest, are published on
#                       their own as v0.<minor>.<patch>: the checkout's
#                       `replace => ./staging/...` lines are pointed at them)
#   go.etcd.io/etcd     etcd (the version Kubernetes pins)
#   containerd/v2       containerd, its runc shim, ctr (Kubernetes 1.35 is the
#                       last to accept containerd 1.x; Debian 12 has 1.6)
#   runc                (Debian 12's 1.1.5 cannot start containerd 2.2's pod
#                       sandboxes: "can't get final child's PID from pipe");
#                       with seccomp, so it needs libseccomp-dev and cgo
#   pause               the pod sandbox's process, from Kubernetes' C source
#   kube-router         NetworkPolicy enforcement (its firewall only, iptables
#                       and ipset): Debian has no CNI plugin that enforces them
#   local-path-provisioner
#                       rancher's dynamic provisioner (what kind and k3s ship):
#                       a PersistentVolumeClaim gets a directory on the node
#   agent-sandbox       kubernetes-sigs' agent-sandbox-controller (a Sandbox
#                       object gets its Pod) and its CRDs, which go beside bin
#                       in crds/agent-sandbox (the same version as the binary)
#
# The CNI plugins come from Debian (containernetworking-plugins).
#
#   scripts/k8s-build.sh            # build what the cache lacks; print its bin dir
#   KENNEL_K8S_CACHE=/path scripts/k8s-build.sh
#
# A cold build takes several minutes on 2 cores (Kubernetes alone ~7); a warm
# one (everything cached) returns at once. Go's build cache is removed after a
# cold build (it is larger than the binaries). A new key (a component added,
# or one's version changed) builds only what changed: the binaries of the
# components whose versions are the same are linked from the cache directory
# of an older key that has them.
set -euo pipefail

K8S_VERSION=${KENNEL_K8S_VERSION:-v1.35.4}
ETCD_VERSION=${KENNEL_ETCD_VERSION:-v3.6.17}
CONTAINERD_VERSION=${KENNEL_CONTAINERD_VERSION:-v2.2.10}
RUNC_VERSION=${KENNEL_RUNC_VERSION:-v1.3.7}
KUBE_ROUTER_VERSION=${KENNEL_KUBE_ROUTER_VERSION:-v2.1.0}
LOCAL_PATH_VERSION=${KENNEL_LOCAL_PATH_VERSION:-v0.0.30}
AGENT_SANDBOX_VERSION=${KENNEL_AGENT_SANDBOX_VERSION:-v1.0.1}
CACHE_ROOT=${KENNEL_K8S_CACHE:-/var/cache/kennel-k8s}
KEY="k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}-containerd-${CONTAINERD_VERSION}-runc-${RUNC_VERSION}-kube-router-${KUBE_ROUTER_VERSION}-local-path-${LOCAL_PATH_VERSION}-agent-sandbox-${AGENT_SANDBOX_VERSION}"
OUT=$CACHE_ROOT/$KEY
BIN=$OUT/bin

SCRIPT_NAME=k8s-build
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WANT=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl etcd
      containerd containerd-shim-runc-v2 ctr runc pause kube-router local-path-provisioner
      agent-sandbox-controller)
# Each binary's component at its version, as the key spells it.
declare -A PART=(
    [kube-apiserver]=k8s-$K8S_VERSION [kube-controller-manager]=k8s-$K8S_VERSION
    [kube-scheduler]=k8s-$K8S_VERSION [kubelet]=k8s-$K8S_VERSION
    [kubectl]=k8s-$K8S_VERSION [pause]=k8s-$K8S_VERSION
    [etcd]=etcd-$ETCD_VERSION
    [containerd]=containerd-$CONTAINERD_VERSION
    [containerd-shim-runc-v2]=containerd-$CONTAINERD_VERSION
    [ctr]=containerd-$CONTAINERD_VERSION
    [runc]=runc-$RUNC_VERSION
    [kube-router]=kube-router-$KUBE_ROUTER_VERSION
    [local-path-provisioner]=local-path-$LOCAL_PATH_VERSION
    [agent-sandbox-controller]=agent-sandbox-$AGENT_SANDBOX_VERSION
)
# A binary's files that are not programs, in a directory beside bin (what
# k8s-up.sh applies with it): the binary counts as missing without them.
declare -A DATA=([agent-sandbox-controller]=crds/agent-sandbox)
has() { # dir-of-a-key name
    [[ -x $1/bin/$2 && ( -z ${DATA[$2]:-} || -d $1/${DATA[$2]} ) ]]
}
missing() {
    local name
    for name in "${WANT[@]}"; do has "$OUT" "$name" || echo "$name"; done
}

# What this key's directory lacks, another key's may have at the same
# version (a key made before a component was added, or before another
# component's version changed): hard links (the same file system), so that
# a new component does not cost a Kubernetes build and the older directory
# stays whole for a checkout that still uses it.
for name in $(missing); do
    for dir in "$CACHE_ROOT"/*/bin; do
        key=${dir%/bin}
        key=${key##*/}
        [[ $dir != "$BIN" && -$key- == *"-${PART[$name]}-"* ]] || continue
        has "${dir%/bin}" "$name" || continue
        mkdir -p "$BIN"
        ln -f "$dir/$name" "$BIN/$name" 2>/dev/null || cp -p "$dir/$name" "$BIN/$name"
        if [[ -n ${DATA[$name]:-} ]]; then
            rm -rf "${OUT:?}/${DATA[$name]}"
            mkdir -p "$(dirname "$OUT/${DATA[$name]}")"
            cp -rl "${dir%/bin}/${DATA[$name]}" "$OUT/${DATA[$name]}" 2>/dev/null || {
                rm -rf "${OUT:?}/${DATA[$name]}"
                cp -rp "${dir%/bin}/${DATA[$name]}" "$OUT/${DATA[$name]}"
            }
        fi
        log "$name ${PART[$name]}: linked from $dir"
        break
    done
done
if [[ -z $(missing) ]]; then
    echo "$BIN"
    exit 0
fi

# Go's own installer puts it in /usr/local/go, which a bare PATH lacks.
command -v go >/dev/null || [[ ! -x /usr/local/go/bin/go ]] || PATH=/usr/local/go/bin:$PATH
command -v go >/dev/null || die "Go 1.24 or newer is needed to build the test cluster (https://go.dev/dl)"
command -v gcc >/dev/null || die "gcc is not installed (apt-get install gcc)"
if [[ ! -x $BIN/runc ]] && ! pkg-config --exists libseccomp 2>/dev/null; then
    die "runc needs libseccomp's headers: apt-get install libseccomp-dev pkg-config"
fi
mkdir -p "$BIN"
WORK=$(mktemp -d "$CACHE_ROOT/build.XXXXXX")
export GOPATH=$WORK/gopath GOCACHE=$WORK/gocache GOWORK=off GOTOOLCHAIN=${GOTOOLCHAIN:-auto}
export GOFLAGS=-mod=mod CGO_ENABLED=0
cleanup() { chmod -R u+w "$WORK" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

need() { ! has "$OUT" "$1"; }

# The source of MODULE@VERSION, writable, in $WORK/NAME (the module cache's
# copy is read-only).
source_of() { # module version name
    local dir
    dir=$(cd "$WORK" && GOFLAGS='' go mod download -json "$1@$2" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    cp -r "$dir" "$WORK/$3"
    chmod -R u+w "$WORK/$3"
}

if need kubelet || need kube-apiserver || need kube-controller-manager || need kube-scheduler \
    || need kubectl; then
    log "Kubernetes $K8S_VERSION: downloading its source from the Go module proxy"
    source_of k8s.io/kubernetes "$K8S_VERSION" kubernetes
    # Staging modules: v1.X.Y's are published as v0.X.Y.
    staging=v0.${K8S_VERSION#v1.}
    sed -i -E "s#^(\s*k8s\.io/[a-z0-9-]+) => \./staging/src/(k8s\.io/[a-z0-9-]+)\$#\1 => \2 $staging#" \
        "$WORK/kubernetes/go.mod"
    if grep -q '=> ./staging' "$WORK/kubernetes/go.mod"; then
        die "go.mod of Kubernetes $K8S_VERSION still names ./staging (its replace lines changed shape)"
    fi
    log "Kubernetes $K8S_VERSION: building (several minutes)"
    version_flags="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
    version_flags+=" -X k8s.io/component-base/version.gitMajor=1"
    version_flags+=" -X k8s.io/component-base/version.gitMinor=$(cut -d. -f2 <<<"$K8S_VERSION")"
    version_flags+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
    (cd "$WORK/kubernetes" && go build -trimpath -ldflags "-s -w $version_flags" -o "$BIN/" \
        ./cmd/kube-apiserver ./cmd/kube-controller-manager ./cmd/kube-scheduler \
        ./cmd/kubelet ./cmd/kubectl)
fi

if need etcd; then
    log "etcd $ETCD_VERSION: building"
    # Its go.mod points its sibling modules (api, client, pkg) at ../X, which
    # `go install` refuses; they are published at the same version, and its
    # require lines name that version.
    source_of go.etcd.io/etcd/server/v3 "$ETCD_VERSION" etcd
    sed -i -E '/^\s*(replace\s+)?go\.etcd\.io\/etcd\/[a-z0-9/]+ => \.\.?\//d' "$WORK/etcd/go.mod"
    (cd "$WORK/etcd" && go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" .)
fi

if need containerd || need containerd-shim-runc-v2 || need ctr; then
    log "containerd $CONTAINERD_VERSION: building"
    GOBIN=$BIN go install -trimpath -tags "no_btrfs no_devmapper no_zfs no_aufs" -ldflags "-s -w \
        -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
        "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
        "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
        "github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION"
fi

if need runc; then
    log "runc $RUNC_VERSION: building"
    source_of github.com/opencontainers/runc "$RUNC_VERSION" runc
    (cd "$WORK/runc" && CGO_ENABLED=1 go build -trimpath -tags seccomp \
        -ldflags "-s -w -X main.version=${RUNC_VERSION#v}" -o "$BIN/runc" .)
fi

if need pause; then
    log "pause: compiling Kubernetes' build/pause/linux/pause.c"
    [[ -d $WORK/kubernetes ]] || source_of k8s.io/kubernetes "$K8S_VERSION" kubernetes
    gcc -Os -static -DVERSION="$K8S_VERSION" -o "$BIN/pause" \
        "$WORK/kubernetes/build/pause/linux/pause.c"
    strip "$BIN/pause"
fi

if need kube-router; then
    log "kube-router $KUBE_ROUTER_VERSION: building"
    source_of github.com/cloudnativelabs/kube-router/v2 "$KUBE_ROUTER_VERSION" kube-router
    (cd "$WORK/kube-router" && go build -trimpath -ldflags "-s -w" -o "$BIN/kube-router" \
        ./cmd/kube-router)
fi

if need local-path-provisioner; then
    log "local-path-provisioner $LOCAL_PATH_VERSION: building"
    source_of github.com/rancher/local-path-provisioner "$LOCAL_PATH_VERSION" local-path-provisioner
    # Its vendor directory is only modules.txt (a module's zip leaves the
    # vendored packages out): they come from the proxy like the others'.
    (cd "$WORK/local-path-provisioner" && go build -trimpath \
        -ldflags "-s -w -X main.VERSION=$LOCAL_PATH_VERSION" -o "$BIN/local-path-provisioner" .)
fi

if need agent-sandbox-controller; then
    log "agent-sandbox $AGENT_SANDBOX_VERSION: building"
    source_of sigs.k8s.io/agent-sandbox "$AGENT_SANDBOX_VERSION" agent-sandbox
    # Its go.mod wants Go 1.26: an older go fetches that toolchain from the
    # proxy (GOTOOLCHAIN=auto). Its CRDs are copied once the binary is built,
    # whole or not at all (a binary without them is missing, see has).
    (cd "$WORK/agent-sandbox" && go build -trimpath -ldflags "-s -w \
        -X sigs.k8s.io/agent-sandbox/internal/version.gitVersion=$AGENT_SANDBOX_VERSION" \
        -o "$BIN/agent-sandbox-controller" ./cmd/agent-sandbox-controller)
    rm -rf "${OUT:?}/crds/agent-sandbox" "$OUT/crds/agent-sandbox.tmp"
    mkdir -p "$OUT/crds"
    cp -r "$WORK/agent-sandbox/k8s/crds" "$OUT/crds/agent-sandbox.tmp"
    mv "$OUT/crds/agent-sandbox.tmp" "$OUT/crds/agent-sandbox"
fi

echo "$BIN"
