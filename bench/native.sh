#!/usr/bin/env bash
# Start-up cost of the native backend, measured in one run, interleaved so
# that drift hits every variant alike:
#   true                                             (bare process)
#   kennel run --backend native shell -- true        (host network)
#   bwrap … true                                     (same binds and namespaces, host network)
#   kennel run --backend native --network none shell -- true
#   bwrap --unshare-all … true                       (with a network namespace)
# bwrap gets the same binds kennel makes (system dirs read-only, usrmerge
# symlinks, /proc, /dev, /tmp, the workspace, a home, the protected .git
# paths) and the same namespaces; it adds no Landlock and no seccomp filter,
# which kennel does.
#
# It prints each variant's median and p95, kennel against bwrap as a
# difference and a ratio, and allowlist against --network none.
#
#   bench/native.sh                  # BENCH_N=50 iterations, 3 warm-up runs
#   BENCH_N=100 KENNEL=target/debug/kennel bench/native.sh
#   BENCH_GIT=0 bench/native.sh      # the workspace is not a git repository
#                                    # (no git audit: what git costs kennel)
#   BENCH_EXEC=1 bench/native.sh     # also `kennel exec SESSION -- true` into
#                                    # a running native session (`kennel start`):
#                                    # a sandbox per command, without a run's
#                                    # registry record and git audit
#
# Needs: a built kennel (default target/release/kennel, else target/debug),
# bwrap (apt-get install bubblewrap), python3, git. Runs as the invoking user.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${BENCH_N:-50}
WARMUP=${BENCH_WARMUP:-3}
if [[ -z ${KENNEL:-} ]]; then
    if [[ -x target/release/kennel ]]; then KENNEL=target/release/kennel; else KENNEL=target/debug/kennel; fi
fi
[[ -x $KENNEL ]] || { echo "bench: no kennel binary at $KENNEL (cargo build --release -p kennel)" >&2; exit 1; }
KENNEL=$(realpath "$KENNEL")
BWRAP=$(command -v bwrap || true)
[[ -n $BWRAP ]] || { echo "bench: bwrap not found (apt-get install bubblewrap)" >&2; exit 1; }
TRUE=$(command -v true)

work=$(mktemp -d /tmp/kennel-bench-native.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/ws" "$work/home/.config/kennel" "$work/agent-home"
[[ ${BENCH_GIT:-1} == 0 ]] || git init -q "$work/ws"
ws=$(realpath "$work/ws")
home="$work/home"

# kennel's environment (passed by the timing loop itself: an `env`
# wrapper would add its own exec to kennel's times).
kennel_env=("HOME=$home" "PATH=/usr/local/bin:/usr/bin:/bin" "KENNEL_SYSTEM_CONFIG=$work/none.toml")
# Prepare kennel's own files once (agent home), untimed.
(cd "$ws" && env -i "${kennel_env[@]}" "$KENNEL" run --backend native shell -- true 2>/dev/null)

bwrap_common=(--ro-bind /usr /usr)
for dir in /bin /sbin /lib /lib32 /lib64 /libx32; do
    if [[ -L $dir ]]; then bwrap_common+=(--symlink "$(readlink "$dir")" "$dir")
    elif [[ -d $dir ]]; then bwrap_common+=(--ro-bind "$dir" "$dir"); fi
done
for dir in /etc /opt; do [[ -d $dir ]] && bwrap_common+=(--ro-bind "$dir" "$dir"); done
bwrap_common+=(--proc /proc --dev /dev --tmpfs /tmp --dir /var --symlink /tmp /var/tmp --dir /run
    --bind "$work/agent-home" "$home" --bind "$ws" "$ws")
for protect in .git/hooks .git/config; do
    [[ -e $ws/$protect ]] && bwrap_common+=(--ro-bind "$ws/$protect" "$ws/$protect")
done
bwrap_common+=(--unshare-user --uid "$(id -u)" --gid "$(id -g)" --die-with-parent --cap-drop ALL
    --clearenv --setenv HOME "$home" --setenv PATH /usr/bin:/bin --chdir "$ws")

session=
if [[ ${BENCH_EXEC:-0} == 1 ]]; then
    session=bench-exec-$$
    (cd "$ws" && env -i "${kennel_env[@]}" "$KENNEL" start --backend native --network none \
        --name "$session" shell >/dev/null) ||
        { echo "bench: kennel start failed" >&2; exit 1; }
    trap '(cd "$ws" && env -i "${kennel_env[@]}" "$KENNEL" rm --force "$session" >/dev/null 2>&1); rm -rf "$work"' EXIT
fi

export BENCH_N=$N BENCH_WARMUP=$WARMUP BENCH_WS=$ws BENCH_SESSION=$session
python3 - "$TRUE" "$KENNEL" "$BWRAP" "${kennel_env[*]}" "${bwrap_common[@]}" <<'PY'
import os, statistics, subprocess, sys, time

true, kennel, bwrap, kennel_env = sys.argv[1:5]
bwrap_common = sys.argv[5:]
kennel_vars = dict(var.split("=", 1) for var in kennel_env.split(" "))
n, warmup, ws = int(os.environ["BENCH_N"]), int(os.environ["BENCH_WARMUP"]), os.environ["BENCH_WS"]

variants = {
    "true": [true],
    "kennel native": [kennel, "run", "--backend", "native", "shell", "--", "true"],
    "bwrap (host net)": [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-uts", *bwrap_common, "true"],
    "kennel native --network none": [kennel, "run", "--backend", "native", "--network", "none", "shell", "--", "true"],
    "bwrap --unshare-all": [bwrap, "--unshare-all", *bwrap_common, "true"],
}
session = os.environ.get("BENCH_SESSION")
if session:
    variants["kennel exec (running session)"] = [kennel, "exec", session, "--", "true"]
times = {name: [] for name in variants}
for round in range(warmup + n):
    for name, argv in variants.items():
        start = time.perf_counter()
        env = kennel_vars if argv[0] == kennel else None
        result = subprocess.run(argv, cwd=ws, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        elapsed = time.perf_counter() - start
        if result.returncode != 0:
            sys.exit(f"bench: {name} failed ({result.returncode}): {result.stderr.decode()}")
        if round >= warmup:
            times[name].append(elapsed * 1000)

median = {name: statistics.median(values) for name, values in times.items()}
p95 = {name: sorted(values)[max(0, int(len(values) * 0.95 + 0.5) - 1)] for name, values in times.items()}
print(f"native backend start-up, {n} runs (ms; overhead over bare `true`):")
print(f"  {'':32} {'median':>7}   {'p95':>7}   {'+true':>7}")
for name in times:
    print(f"  {name:32} {median[name]:7.2f}   {p95[name]:7.2f}   +{median[name] - median['true']:6.2f}")
for kennel_name, bwrap_name in (("kennel native", "bwrap (host net)"), ("kennel native --network none", "bwrap --unshare-all")):
    k, b = median[kennel_name], median[bwrap_name]
    print(f"{kennel_name} vs {bwrap_name}: {k - b:+.2f} ms, ratio {k / b:.2f} (goal: at most 1.20)")
if session:
    k, b = median["kennel exec (running session)"], median["bwrap --unshare-all"]
    print(f"kennel exec into a running session vs bwrap --unshare-all: {k - b:+.2f} ms, ratio {k / b:.2f}")
print(f"allowlist (proxy and forwarder) vs --network none: {median['kennel native'] - median['kennel native --network none']:+.2f} ms (goal: within 2 ms)")
PY
