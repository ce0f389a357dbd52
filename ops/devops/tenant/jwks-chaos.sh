#!/usr/bin/env bash
# jwks-chaos.sh — block / restore the services' egress to the JWKS endpoint, without Chaos Toolkit.
# Same code path as the Chaos Toolkit actions (python3 -m chaosext.egress). See docs/egress.md.
set -euo pipefail

# the checkout's .venv (scripts/setup) when there is one, else python3 from PATH; PYTHON overrides both
venv_python="$(cd "$(dirname "$0")/../../.." && pwd)/.venv/bin/python"
if [ -x "$venv_python" ]; then PY="${PYTHON:-$venv_python}"; else PY="${PYTHON:-python3}"; fi

usage() {
  cat <<'USAGE'
Usage: jwks-chaos.sh <command> [options]

Commands:
  block    block the JWKS endpoint from the target until restored or --duration passes
  restore  remove the faults recorded for the target (--all: every chaosext fault found by tags)
  status   show recorded faults and faults found on the target (exit 3 if a block is active)
  run      timed run: block, wait --duration seconds, restore; Ctrl-C / SIGTERM restore at once

Common options (every value also from the environment, read exactly as `chaos run` and `chaosext` read it:
JWKS_URL, FAULT_VIA, FAULT_TARGET, FAULT_MODE, OUTAGE_SECONDS, MAX_OUTAGE_SECONDS, HEARTBEAT_GRACE,
ENVOY_ADMIN_URL, KUBE_API_URL, KUBE_CONTEXT; the Kubernetes drivers also take chaostoolkit-kubernetes'
KUBECONFIG / KUBERNETES_CONTEXT / KUBERNETES_HOST + KUBERNETES_API_KEY, see docs/experiment.md):
  --jwks-url URL     default: the lab's http://127.0.0.2:8440/.well-known/jwks.json
  --via V            iptables (default) | envoy | k8s-networkpolicy | istio
  --target T         local | netns:<name> | pid:<pid> | k8s-pod:<ns>/<pod|selector> | <envoy admin URL> | <ns>/<sel>
  --mode M           drop (timeouts, default) | reject (refused at once)
  --duration N       seconds until the fault lifts by itself (kernel deadline + watchdog); default 300, cap 3600
  --dry-run          print the exact commands / API calls, change nothing

Examples:
  jwks-chaos.sh run --duration 120 --mode reject
  jwks-chaos.sh block --target netns:tenant-a --duration 300 && jwks-chaos.sh status
  jwks-chaos.sh restore --all            # panic button
Run `jwks-chaos.sh <command> --help` for every option of a command.
USAGE
}

cmd="${1:-}"
case "$cmd" in
  block|restore|status|run)
    shift
    # `run` traps INT/TERM itself (in Python) and restores before exiting
    exec "$PY" -m chaosext.egress "$cmd" "$@"
    ;;
  -h|--help|help|"")
    usage
    [ -n "$cmd" ] || exit 2
    ;;
  *)
    echo "jwks-chaos.sh: unknown command '$cmd'" >&2
    usage >&2
    exit 2
    ;;
esac
