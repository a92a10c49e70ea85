#!/usr/bin/env bash
# Roll one tfrebuild bundle out to many machines: a canary first, then the rest;
# if any machine fails, roll back every machine that had already applied it.
#
# usage: rollout.sh -b BUNDLE -e ENV [-c CANARY] [-r ssh|pdsh|local] [-p N] HOST...
#   -b BUNDLE  bundle folder made by `tfrebuild bundle`, at the same path on every host
#              (shared storage: NFS, Lustre, GPFS ...)
#   -e ENV     environment path on each host; "{host}" in it is replaced by the host name
#   -c CANARY  host to try first (default: the first HOST)
#   -r RUNNER  how to run a command on a host: ssh (default), pdsh, or local (this machine,
#              for trying the script out; combine with "{host}" in ENV)
#   -p N       hosts at once after the canary (default 8)
# environment: TFREBUILD  the tfrebuild command on the hosts (default: tfrebuild)
#              SSH        the ssh command (default: ssh -o BatchMode=yes)
#              WORK       folder for per-host results (default: a new temporary folder)
# exit status: 0 every host applied the bundle (or already had it)
#              1 the canary failed: no other host was touched
#              2 a host failed: every host that had applied was rolled back
#              3 the bundle on shared storage does not match its SHA256SUMS: nothing was touched
#             64 usage error
set -u -o pipefail

RUNNER=ssh PARALLEL=8 BUNDLE= ENV_TEMPLATE= CANARY=
TFREBUILD=${TFREBUILD:-tfrebuild}
SSH=${SSH:-ssh -o BatchMode=yes}

usage() { sed -n '2,23p' "$0" >&2; exit 64; }
while getopts "b:e:c:r:p:h" opt; do
    case $opt in
        b) BUNDLE=$OPTARG ;; e) ENV_TEMPLATE=$OPTARG ;; c) CANARY=$OPTARG ;;
        r) RUNNER=$OPTARG ;; p) PARALLEL=$OPTARG ;; *) usage ;;
    esac
done
shift $((OPTIND - 1))
HOSTS=("$@")
[ -n "$BUNDLE" ] && [ -n "$ENV_TEMPLATE" ] && [ ${#HOSTS[@]} -gt 0 ] || usage
case $RUNNER in ssh|pdsh|local) ;; *) echo "unknown runner: $RUNNER" >&2; usage ;; esac
CANARY=${CANARY:-${HOSTS[0]}}
WORK=${WORK:-$(mktemp -d "${TMPDIR:-/tmp}/rollout.XXXXXX")}
mkdir -p "$WORK"

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

on_host() {  # on_host HOST COMMAND: run a shell command line on HOST
    case $RUNNER in
        ssh) $SSH "$1" -- "$2" ;;
        pdsh) pdsh -N -w "$1" "$2" ;;
        local) bash -c "$2" ;;
    esac
}

env_of() { printf '%s' "${ENV_TEMPLATE//\{host\}/$1}"; }

apply_on() {  # apply_on HOST: writes WORK/HOST.json (tfrebuild's --json) and WORK/HOST.err
    local host=$1 cmd
    cmd=$(printf '%q ' $TFREBUILD apply "$BUNDLE/profile.toml" --env "$(env_of "$host")" \
        --find-links "$BUNDLE" --offline --yes --json)
    if on_host "$host" "$cmd" >"$WORK/$host.json" 2>"$WORK/$host.err"; then
        log "$host: $(summary "$host")"
        touch "$WORK/$host.ok"
        return 0
    fi
    log "$host: FAILED: $(grep -m1 'error:' "$WORK/$host.err" || tail -n1 "$WORK/$host.err")"
    return 1
}

summary() {  # what tfrebuild's JSON says about HOST
    python3 - "$WORK/$1.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
if not d.get("changed"):
    print("already up to date")
elif d.get("previous") is None:
    print(f"created generation {d['generation']}")
else:
    print(f"generation {d['previous']} -> {d['generation']}")
PY
}

rollback_target() {  # prints the generation to roll back to, or nothing (new env / unchanged)
    python3 - "$WORK/$1.json" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except (OSError, ValueError):
    sys.exit(0)
if d.get("changed") and d.get("previous") is not None:
    print(d["previous"])
PY
}

# 0. The bundle on shared storage must be the one that was made: check every file's hash.
if ! (cd "$BUNDLE" && sha256sum --check --quiet SHA256SUMS) >&2; then
    log "the bundle $BUNDLE does not match its SHA256SUMS; nothing was touched"
    exit 3
fi

# 1. The canary alone.
log "canary: $CANARY"
if ! apply_on "$CANARY"; then
    log "the canary failed; no other host was touched (its environment is unchanged: apply changes nothing on failure)"
    exit 1
fi

# 2. The rest, PARALLEL at a time.
REST=()
for h in "${HOSTS[@]}"; do [ "$h" = "$CANARY" ] || REST+=("$h"); done
running=0
for h in "${REST[@]}"; do
    apply_on "$h" &
    running=$((running + 1))
    if [ "$running" -ge "$PARALLEL" ]; then wait -n; running=$((running - 1)); fi
done
wait
FAILED=()
for h in "${REST[@]}"; do [ -e "$WORK/$h.ok" ] || FAILED+=("$h"); done

if [ ${#FAILED[@]} -eq 0 ]; then
    log "all ${#HOSTS[@]} host(s) applied $BUNDLE"
    exit 0
fi

# 3. Roll back every host that applied (the failed ones were not changed).
log "failed on: ${FAILED[*]}; rolling back the others"
for h in "$CANARY" "${REST[@]}"; do
    gen=$(rollback_target "$h")
    if [ -n "$gen" ]; then
        cmd=$(printf '%q ' $TFREBUILD rollback --env "$(env_of "$h")" --to "$gen" --yes)
        if on_host "$h" "$cmd" >"$WORK/$h.rollback" 2>&1; then
            log "$h: rolled back to generation $gen"
        else
            log "$h: ROLLBACK FAILED, see $WORK/$h.rollback"
        fi
    elif [ -s "$WORK/$h.json" ] && grep -q '"previous": null' "$WORK/$h.json" && grep -q '"changed": true' "$WORK/$h.json"; then
        log "$h: the environment was new here; left in place (nothing to roll back to)"
    fi
done
exit 2
