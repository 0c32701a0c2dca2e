# Helpers shared by kennel's set-up scripts. Source it after setting
# SCRIPT_NAME (the prefix of every line the script prints).

log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2; exit 1; }

# Run a command quietly; on failure print its output and stop.
quiet() {
    local out
    if ! out=$("$@" 2>&1); then
        printf '%s: ERROR: command failed: %s\n%s\n' "$SCRIPT_NAME" "$*" "$out" >&2
        exit 1
    fi
}
