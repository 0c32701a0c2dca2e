#!/usr/bin/env bash
# Start-up cost of the Kubernetes backend, measured in one run, interleaved
# so that drift hits both alike, on the same cluster, namespace and image:
#   kennel run --backend kubernetes --mode clone --network none shell -- sh -c 'echo READY'
#   kubectl run NAME --image IMAGE --restart=Never --rm -i --quiet -- sh -c 'echo READY'
# For each: the time until the agent's first line (READY) reaches the
# terminal — session start to agent prompt — and until the command ends.
# kubectl is the smallest thing a user would type to run one command in a
# fresh Pod and leave nothing. kennel does more before the agent starts:
# the session registry and its clone, the Pod's NetworkPolicy and the wait
# until a probe from inside is refused (policies hold ~1.3 s after a Pod
# starts on the test cluster), the clone sent in; and after it ends: the
# agent's work brought back as a git bundle and checked.
#
#   bench/kubernetes.sh                   # BENCH_N=10 runs of each, 1 warm-up
#   BENCH_N=20 KENNEL=target/debug/kennel bench/kubernetes.sh
#   BENCH_KUBERNETES='agent_sandbox = false' bench/kubernetes.sh   # plain Pods
#
# Needs: a built kennel (default target/release/kennel, else target/debug),
# a cluster the invoking user's kubeconfig reaches (KUBECONFIG, else
# ~/.kube/config; scripts/e2e-setup.sh gives the test user one), kennel's
# shell image on its nodes (BENCH_IMAGE, default: the image `kennel run
# --backend docker shell --dry-run` names, which the e2e tests import into
# the test cluster), kubectl (BENCH_KUBECTL or on PATH, else the test
# cluster's), python3, git.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${BENCH_N:-10}
WARMUP=${BENCH_WARMUP:-1}
if [[ -z ${KENNEL:-} ]]; then
    if [[ -x target/release/kennel ]]; then KENNEL=target/release/kennel; else KENNEL=target/debug/kennel; fi
fi
[[ -x $KENNEL ]] || { echo "bench: no kennel binary at $KENNEL (cargo build --release -p kennel)" >&2; exit 1; }
KENNEL=$(realpath "$KENNEL")
KUBECTL=${BENCH_KUBECTL:-$(command -v kubectl || ls /var/cache/kennel-k8s/*/bin/kubectl 2>/dev/null | head -1 || true)}
[[ -x $KUBECTL ]] || { echo "bench: no kubectl (BENCH_KUBECTL=…)" >&2; exit 1; }
KUBECONFIG=${KUBECONFIG:-$HOME/.kube/config}
[[ -f $KUBECONFIG ]] || { echo "bench: no kubeconfig at $KUBECONFIG" >&2; exit 1; }
export KUBECONFIG

work=$(mktemp -d "${TMPDIR:-/tmp}/kennel-bench-kube.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ws" "$work/config/kennel" "$work/data"
git init -q "$work/ws"
git -C "$work/ws" -c user.name=bench -c user.email=bench@example.invalid commit -q --allow-empty -m bench
image=${BENCH_IMAGE:-$(cd "$work/ws" && XDG_CONFIG_HOME=$work/config XDG_DATA_HOME=$work/data \
    "$KENNEL" run --backend docker --dry-run shell |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["image"]["reference"])')}
# BENCH_KUBERNETES: more lines for [kubernetes] (`agent_sandbox = false`).
printf '[defaults]\nbackend = "kubernetes"\nmode = "clone"\n\n[kubernetes]\nkubeconfig = "%s"\n%s\n' \
    "$KUBECONFIG" "${BENCH_KUBERNETES:-}" >"$work/config/kennel/config.toml"
export XDG_CONFIG_HOME=$work/config XDG_DATA_HOME=$work/data
cd "$work/ws"

export BENCH_N=$N BENCH_WARMUP=$WARMUP
python3 - "$KENNEL" "$KUBECTL" "$image" <<'PY'
import os, statistics, subprocess, sys, time
kennel, kubectl, image = sys.argv[1], sys.argv[2], sys.argv[3]
n, warmup = int(os.environ["BENCH_N"]), int(os.environ["BENCH_WARMUP"])
agent = ["sh", "-c", "echo READY"]

def timed(argv):
    """Seconds until READY is printed, and until the command ends."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    first = None
    for line in proc.stdout:
        if first is None and line.strip() == b"READY":
            first = time.monotonic() - start
    code = proc.wait()
    total = time.monotonic() - start
    if code != 0 or first is None:
        sys.exit(f"bench: {' '.join(argv)} failed (exit {code}, READY {'seen' if first else 'not seen'})")
    return first, total

counter = [0]
def run_kennel():
    return timed([kennel, "run", "--image", image, "--network", "none", "shell", "--", *agent])

def run_kubectl():
    counter[0] += 1
    name = f"bench-{os.getpid()}-{counter[0]}"
    return timed([kubectl, "run", name, "--image", image, "--restart=Never", "--rm", "-i",
                  "--quiet", "--image-pull-policy=IfNotPresent", "--", *agent])

variants = [("kennel run --backend kubernetes", run_kennel), ("kubectl run --rm -i", run_kubectl)]
for _ in range(warmup):
    for _, run in variants:
        run()
results = {name: [] for name, _ in variants}
for _ in range(n):
    for name, run in variants:
        results[name].append(run())

def median(values):
    return statistics.median(values)

print(f"N={n}, image {image}")
print(f"{'':34} {'to READY (median)':>18} {'to the end (median)':>20}")
for name, samples in results.items():
    print(f"{name:34} {median([s[0] for s in samples]):>16.2f} s {median([s[1] for s in samples]):>18.2f} s")
k, b = results[variants[0][0]], results[variants[1][0]]
print(f"ratio kennel / kubectl: to READY {median([s[0] for s in k]) / median([s[0] for s in b]):.2f}, "
      f"to the end {median([s[1] for s in k]) / median([s[1] for s in b]):.2f}")

# kennel keeps agent homes; the bench's (its workspace's) goes: its claim
# is named after the home the Plan mounts.
import hashlib, json
plan = json.loads(subprocess.run([kennel, "run", "--image", image, "--dry-run", "shell"],
                                 capture_output=True, check=True).stdout)
home = next(m["source"] for m in plan["mounts"] if m["purpose"] == "agent-home")
claim = "kennel-home-shell-" + hashlib.sha256(home.encode()).hexdigest()[:16]
subprocess.run([kubectl, "delete", "pvc", claim, "--wait=false", "--ignore-not-found"],
               stdout=subprocess.DEVNULL, check=False)
PY
