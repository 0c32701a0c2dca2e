#!/usr/bin/env bash
# Start (or find running) a real single-node Kubernetes cluster on this
# machine, for the Kubernetes backend's end-to-end tests. Run as root.
#
#   scripts/k8s-up.sh          # build what is missing (scripts/k8s-build.sh),
#                              # start the cluster, wait until a pod can run;
#                              # prints the admin kubeconfig's path
#   scripts/k8s-up.sh --down   # stop everything it started (state is kept)
#   scripts/k8s-up.sh --fresh  # stop, remove the state, start again
#   scripts/k8s-up.sh --user NAME:NAMESPACE
#                              # also: a user NAME (a client certificate of
#                              # the cluster's CA) who may edit NAMESPACE
#                              # only (its Sandboxes too), as a team member
#                              # would; prints the path of that user's
#                              # kubeconfig instead
#
# What runs (each a process of this script's, logs in $STATE/logs):
#   etcd             127.0.0.1:2379, TLS with client certificates
#   containerd       $RUN/containerd.sock, its own root and state, runc from
#                    Debian, the pause image built from source and imported
#   kube-apiserver   127.0.0.1:6443 (advertised on the host's address),
#                    Node and RBAC authorization, NodeRestriction
#   controller-manager, scheduler (no leader election)
#   kubelet          node `kennel-node`, cgroupfs driver, cgroup v1 allowed
#                    (failCgroupV1: false), the CNI bridge plugin from Debian
#                    on 10.244.0.0/24
#   kube-router      its firewall only: NetworkPolicies enforced with
#                    iptables and ipset (a Pod's rules come some seconds after
#                    it starts: what relies on them checks first)
#   local-path-provisioner
#                    rancher's dynamic provisioner, with the admin's
#                    kubeconfig: the StorageClass `local-path` (the default
#                    one) gives a claim a directory under $STATE/local-path,
#                    made and removed by a helper pod in namespace
#                    local-path-storage
#   agent-sandbox-controller
#                    kubernetes-sigs' agent-sandbox, with the admin's
#                    kubeconfig, its CRDs applied first: a Sandbox
#                    (agents.x-k8s.io/v1beta1) gets a Pod of its name
# Certificates: one CA of the cluster's own (openssl), a certificate per
# component; the admin's kubeconfig is $STATE/admin.kubeconfig (mode 0600).
#
# Environment: KENNEL_K8S_STATE (default /var/lib/kennel-k8s), KENNEL_K8S_CACHE
# and the versions of scripts/k8s-build.sh; KENNEL_K8S_HELPER_IMAGE, the
# provisioner's helper pods' image (default docker.io/kennel-test/bookworm:latest,
# which scripts/e2e-setup.sh imports): any with /bin/sh that the node's
# containerd already has, since no registry is reachable (a claim waits for
# it: helper pods run only when a claim is provisioned or deleted).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${KENNEL_K8S_STATE:-/var/lib/kennel-k8s}
RUN=/run/kennel-k8s
NODE=kennel-node
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/24
SERVICE_IP=10.96.0.1
PAUSE_IMAGE=registry.kennel.invalid/pause:3.10
HELPER_IMAGE=${KENNEL_K8S_HELPER_IMAGE:-docker.io/kennel-test/bookworm:latest}
LOCAL_PATH=$STATE/local-path

SCRIPT_NAME=k8s-up
# shellcheck source=scripts/lib.sh
. "$HERE/lib.sh"

[[ $(id -u) == 0 ]] || die "run as root (it starts containerd and a kubelet)"

MODE=up
USER_SPEC=
while (($#)); do
    case $1 in
        --down) MODE=down ;;
        --fresh) MODE=fresh ;;
        --user)
            [[ ${2:-} == ?*:?* ]] || die "--user needs NAME:NAMESPACE"
            USER_SPEC=$2
            shift
            ;;
        *) die "unknown argument $1 (use --down, --fresh or --user NAME:NAMESPACE)" ;;
    esac
    shift
done

COMPONENTS=(agent-sandbox-controller local-path-provisioner kube-router kubelet kube-scheduler kube-controller-manager kube-apiserver containerd etcd)

stop_all() {
    local name pid
    for name in "${COMPONENTS[@]}"; do
        [[ -f $RUN/$name.pid ]] || continue
        pid=$(cat "$RUN/$name.pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$RUN/$name.pid"
    done
    # The pods' shims and their processes outlive containerd on purpose;
    # a stopped cluster keeps none.
    pkill -f "containerd-shim-runc-v2 -namespace k8s.io -address $RUN/containerd.sock" 2>/dev/null || true
    unmount_leftovers
}

# Mounts the kubelet and containerd left (a stopped cluster's, or a killed
# one's: a machine whose processes were all ended keeps their mounts).
unmount_leftovers() {
    { grep -oE " ($STATE|$RUN)/[^ ]*" /proc/self/mounts || true; } | sort -r |
        while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
}

case $MODE in
    down) stop_all; log "stopped"; exit 0 ;;
    fresh) stop_all; rm -rf "$STATE" ;;
esac

admin_ready() {
    [[ -f $STATE/admin.kubeconfig ]] &&
        "$BIN/kubectl" --kubeconfig "$STATE/admin.kubeconfig" get --raw /readyz >/dev/null 2>&1
}

running() { [[ -f $RUN/$1.pid ]] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

BIN=$("$HERE/k8s-build.sh")
export PATH=$BIN:$PATH
admin=(kubectl --kubeconfig "$STATE/admin.kubeconfig")

mkdir -p "$STATE"/{pki,logs,etcd,containerd,kubelet,cni/net.d,cni/cache} "$RUN"
chmod 0700 "$STATE" "$STATE/pki" "$STATE/etcd"
HOST_IP=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')
[[ -n $HOST_IP ]] || HOST_IP=127.0.0.1

# --- certificates -----------------------------------------------------------
PKI=$STATE/pki
cert() { # name subject [san]
    local name=$1 subject=$2 san=${3:-}
    [[ -f $PKI/$name.crt ]] && return
    openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
    openssl req -new -key "$PKI/$name.key" -subj "$subject" -out "$PKI/$name.csr" 2>/dev/null
    local ext=$PKI/$name.ext
    {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=serverAuth,clientAuth"
        [[ -n $san ]] && echo "subjectAltName=$san"
    } >"$ext"
    openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
        -CAcreateserial -days 3650 -sha256 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
    rm -f "$PKI/$name.csr" "$ext"
    chmod 0600 "$PKI/$name.key"
}
if [[ ! -f $PKI/ca.crt ]]; then
    openssl genrsa -out "$PKI/ca.key" 2048 2>/dev/null
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=kennel-k8s-ca" -days 3650 \
        -out "$PKI/ca.crt" 2>/dev/null
    chmod 0600 "$PKI/ca.key"
fi
cert etcd "/CN=etcd" "IP:127.0.0.1,DNS:localhost"
cert apiserver-etcd "/CN=kube-apiserver-etcd-client"
cert apiserver "/CN=kube-apiserver" \
    "IP:127.0.0.1,IP:$HOST_IP,IP:$SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert apiserver-kubelet "/O=kubeadm:cluster-admins/CN=kube-apiserver-kubelet-client"
cert admin "/O=system:masters/CN=kennel-admin"
cert controller-manager "/CN=system:kube-controller-manager"
cert scheduler "/CN=system:kube-scheduler"
cert kubelet "/O=system:nodes/CN=system:node:$NODE" "IP:127.0.0.1,IP:$HOST_IP,DNS:$NODE,DNS:localhost"
if [[ ! -f $PKI/sa.key ]]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
    chmod 0600 "$PKI/sa.key"
fi

kubeconfig() { # name user
    local file=$STATE/$1.kubeconfig
    [[ -f $file ]] && return
    KUBECONFIG=$file kubectl config set-cluster kennel --server="https://127.0.0.1:6443" \
        --certificate-authority="$PKI/ca.crt" --embed-certs >/dev/null
    KUBECONFIG=$file kubectl config set-credentials "$2" --client-certificate="$PKI/$1.crt" \
        --client-key="$PKI/$1.key" --embed-certs >/dev/null
    KUBECONFIG=$file kubectl config set-context kennel --cluster=kennel --user="$2" >/dev/null
    KUBECONFIG=$file kubectl config use-context kennel >/dev/null
    chmod 0600 "$file"
}
kubeconfig admin kennel-admin
kubeconfig controller-manager system:kube-controller-manager
kubeconfig scheduler system:kube-scheduler
kubeconfig kubelet "system:node:$NODE"

start() { # name command...
    local name=$1
    shift
    running "$name" && return
    "$@" >"$STATE/logs/$name.log" 2>&1 &
    echo $! >"$RUN/$name.pid"
}

wait_for() { # what seconds command...
    local what=$1 seconds=$2
    shift 2
    for _ in $(seq 1 $((seconds * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    die "$what did not come up within ${seconds}s (logs: $STATE/logs)"
}

# --- etcd -------------------------------------------------------------------
start etcd etcd --name kennel --data-dir "$STATE/etcd" \
    --listen-client-urls https://127.0.0.1:2379 --advertise-client-urls https://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster kennel=http://127.0.0.1:2380 \
    --client-cert-auth --trusted-ca-file "$PKI/ca.crt" \
    --cert-file "$PKI/etcd.crt" --key-file "$PKI/etcd.key" \
    --listen-metrics-urls http://127.0.0.1:2381
wait_for etcd 30 curl -sf http://127.0.0.1:2381/health

# --- containerd -------------------------------------------------------------
running containerd || unmount_leftovers
RESTRICT_OOM=false
if ! (echo -1 >/proc/self/oom_score_adj) 2>/dev/null; then RESTRICT_OOM=true; fi
cat >"$STATE/containerd/config.toml" <<EOF
version = 3
root = "$STATE/containerd/root"
state = "$RUN/containerd"
[grpc]
  address = "$RUN/containerd.sock"
[ttrpc]
  address = "$RUN/containerd.sock.ttrpc"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "$PAUSE_IMAGE"
[plugins."io.containerd.cri.v1.runtime"]
  # The kubelet asks for negative OOM scores (-998 for the pause process);
  # lowering a score needs CAP_SYS_RESOURCE, which some machines (these
  # among them) withhold even from root: runc then fails with "can't get
  # final child's PID from pipe". Scores are kept at containerd's own.
  restrict_oom_score_adj = $RESTRICT_OOM
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$STATE/cni/net.d"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
      BinaryName = "$BIN/runc"
      SystemdCgroup = false
EOF
cat >"$STATE/cni/net.d/10-kennel.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "kennel-k8s",
  "plugins": [
    {"type": "bridge", "bridge": "kennel-k8s0", "isGateway": true, "ipMasq": true,
     "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$STATE/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
EOF
start containerd containerd --config "$STATE/containerd/config.toml"
wait_for containerd 30 ctr --address "$RUN/containerd.sock" version

# The pod sandbox's image: the pause binary in a one-layer OCI image.
if ! ctr --address "$RUN/containerd.sock" -n k8s.io images ls -q | grep -qx "$PAUSE_IMAGE"; then
    python3 "$HERE/oci-tar.py" --binary "$BIN/pause" --entrypoint /pause --user 65535:65535 \
        --name "$PAUSE_IMAGE" --out "$STATE/pause.tar"
    ctr --address "$RUN/containerd.sock" -n k8s.io images import "$STATE/pause.tar" >/dev/null
    rm -f "$STATE/pause.tar"
fi

# --- control plane ----------------------------------------------------------
start kube-apiserver kube-apiserver \
    --advertise-address "$HOST_IP" --bind-address 127.0.0.1 --secure-port 6443 \
    --etcd-servers https://127.0.0.1:2379 --etcd-cafile "$PKI/ca.crt" \
    --etcd-certfile "$PKI/apiserver-etcd.crt" --etcd-keyfile "$PKI/apiserver-etcd.key" \
    --client-ca-file "$PKI/ca.crt" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet.crt" \
    --kubelet-client-key "$PKI/apiserver-kubelet.key" \
    --kubelet-certificate-authority "$PKI/ca.crt" \
    --kubelet-preferred-address-types InternalIP,Hostname \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --allow-privileged=false --profiling=false
wait_for kube-apiserver 90 kubectl --kubeconfig "$STATE/admin.kubeconfig" get --raw /readyz
# The API server's own client certificate may reach the kubelet's API
# (exec, attach, logs): kubeadm's role binding, made here.
kubectl --kubeconfig "$STATE/admin.kubeconfig" create clusterrolebinding kennel-apiserver-kubelet \
    --clusterrole system:kubelet-api-admin --user kube-apiserver-kubelet-client \
    >/dev/null 2>&1 || true

start kube-controller-manager kube-controller-manager \
    --kubeconfig "$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" --profiling=false
start kube-scheduler kube-scheduler --kubeconfig "$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig "$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --profiling=false

# --- kubelet ----------------------------------------------------------------
cat >"$STATE/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: "$HOST_IP"
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: Webhook}
tlsCertFile: "$PKI/kubelet.crt"
tlsPrivateKeyFile: "$PKI/kubelet.key"
containerRuntimeEndpoint: "unix://$RUN/containerd.sock"
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
cgroupsPerQOS: true
enforceNodeAllocatable: []
podCIDR: "$POD_CIDR"
resolvConf: /etc/resolv.conf
maxPods: 50
serializeImagePulls: false
imageGCHighThresholdPercent: 100
# Disk-based eviction off (0%, as kind does): the test machine's disk is
# shared and its free space swings by gigabytes while CI builds; at the old
# 1% the node took the DiskPressure taint mid-run and refused every Pod.
evictionHard: {"memory.available": "100Mi", "nodefs.available": "0%", "nodefs.inodesFree": "0%", "imagefs.available": "0%", "imagefs.inodesFree": "0%"}
staticPodPath: ""
EOF
start kubelet kubelet --config "$STATE/kubelet/config.yaml" \
    --kubeconfig "$STATE/kubelet.kubeconfig" --root-dir "$STATE/kubelet" \
    --hostname-override "$NODE" --node-ip "$HOST_IP"
wait_for "node $NODE" 120 sh -c \
    "kubectl --kubeconfig '$STATE/admin.kubeconfig' get node $NODE -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"

# --- NetworkPolicy enforcement -------------------------------------------------
command -v ipset >/dev/null || die "kube-router needs ipset (apt-get install ipset)"
start kube-router kube-router --kubeconfig "$STATE/admin.kubeconfig" \
    --run-firewall=true --run-router=false --run-service-proxy=false --enable-cni=false \
    --hostname-override "$NODE" --metrics-port=0 --health-port=0
wait_for kube-router 60 sh -c "iptables -S KUBE-ROUTER-FORWARD >/dev/null"

# --- dynamic storage ------------------------------------------------------------
# rancher's local-path-provisioner, as kind and k3s ship it, but a process
# of this script's with the admin's kubeconfig rather than a Deployment (no
# registry serves its image). Its ConfigMap holds its configuration and the
# helper pod's template (read once, at start) and the setup and teardown
# scripts, which the helper pods mount from it. The directory is made 0777 as
# upstream does: a hostPath volume takes no fsGroup, and a Pod's non-root
# user must write to it. Helper pods need no API access: their
# ServiceAccount mounts no token. Its log has an error for every helper pod
# ("failed to save ... logs: unable to retrieve in cluster config"): it
# copies their logs with in-cluster credentials only; nothing else fails.
"${admin[@]}" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata: {name: local-path-storage}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: local-path-provisioner-service-account, namespace: local-path-storage}
automountServiceAccountToken: false
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local-path
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: rancher.io/local-path
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
---
apiVersion: v1
kind: ConfigMap
metadata: {name: local-path-config, namespace: local-path-storage}
data:
  config.json: |-
    {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["$LOCAL_PATH"]}]}
  setup: |-
    #!/bin/sh
    set -eu
    mkdir -m 0777 -p "\$VOL_DIR"
  teardown: |-
    #!/bin/sh
    set -eu
    rm -rf "\$VOL_DIR"
  helperPod.yaml: |-
    apiVersion: v1
    kind: Pod
    metadata:
      name: helper-pod
    spec:
      priorityClassName: system-node-critical
      tolerations:
        - key: node.kubernetes.io/disk-pressure
          operator: Exists
          effect: NoSchedule
      containers:
      - name: helper-pod
        image: $HELPER_IMAGE
        imagePullPolicy: IfNotPresent
EOF
start local-path-provisioner local-path-provisioner --debug start \
    --kubeconfig "$STATE/admin.kubeconfig" --namespace local-path-storage \
    --configmap-name local-path-config \
    --service-account-name local-path-provisioner-service-account --helper-image "$HELPER_IMAGE"
wait_for local-path-provisioner 30 grep -q '"Started provisioner controller"' \
    "$STATE/logs/local-path-provisioner.log"

# --- agent sandboxes --------------------------------------------------------
# kubernetes-sigs' agent-sandbox: its CRDs, from the build's cache beside
# bin (the controller's version), applied server-side (client-side apply
# would keep a copy of each in an annotation: the Sandbox's and the
# SandboxTemplate's schemas hold a whole Pod spec, 65 kB, a quarter of the
# annotations' limit, and growing); then its controller, a process of this
# script's with the admin's kubeconfig rather than a Deployment (no registry
# serves its image). One replica: no leader election. Its metrics and
# health listeners are off (they would take the host's ports 8080 and
# 8081). Without --extensions it acts on Sandboxes only: the CRDs of
# SandboxClaim, SandboxTemplate and SandboxWarmPool are there, no controller
# acts on them.
"${admin[@]}" apply --server-side --field-manager kennel-k8s-up \
    -f "${BIN%/bin}/crds/agent-sandbox" >/dev/null
"${admin[@]}" wait --for condition=Established --timeout 60s \
    -f "${BIN%/bin}/crds/agent-sandbox" >/dev/null
start agent-sandbox-controller agent-sandbox-controller \
    --kubeconfig "$STATE/admin.kubeconfig" --leader-elect=false \
    --metrics-bind-address=0 --health-probe-bind-address=0
wait_for agent-sandbox-controller 30 grep -q '"Starting workers".*"controller":"sandbox"' \
    "$STATE/logs/agent-sandbox-controller.log"

if [[ -z $USER_SPEC ]]; then
    echo "$STATE/admin.kubeconfig"
    exit 0
fi

# --- a user of one namespace ------------------------------------------------
name=${USER_SPEC%%:*}
namespace=${USER_SPEC#*:}
cert "user-$name" "/CN=$name"
kubeconfig "user-$name" "$name"
"${admin[@]}" get namespace "$namespace" >/dev/null 2>&1 ||
    "${admin[@]}" create namespace "$namespace" >/dev/null
"${admin[@]}" -n "$namespace" get rolebinding "$name-edit" >/dev/null 2>&1 ||
    "${admin[@]}" -n "$namespace" create rolebinding "$name-edit" --clusterrole edit \
        --user "$name" >/dev/null
# The edit role has the namespace's claims; the classes they name are the
# cluster's, which the user may read (kubectl get storageclass) and no more.
"${admin[@]}" apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: kennel-storageclass-reader}
rules:
  - apiGroups: [storage.k8s.io]
    resources: [storageclasses]
    verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: $name-storageclass-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kennel-storageclass-reader}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: $name}]
---
# The edit role knows no custom resources: the namespace's Sandboxes are
# the user's too (the controller makes their Pods, as it would anyone's).
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: kennel-sandbox-editor, namespace: $namespace}
rules:
  - apiGroups: [agents.x-k8s.io]
    resources: [sandboxes]
    verbs: [get, list, watch, create, update, patch, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: $name-sandboxes, namespace: $namespace}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: kennel-sandbox-editor}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: $name}]
EOF
KUBECONFIG=$STATE/user-$name.kubeconfig kubectl config set-context kennel \
    --namespace "$namespace" >/dev/null
echo "$STATE/user-$name.kubeconfig"
