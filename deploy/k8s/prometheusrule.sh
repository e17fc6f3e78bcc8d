#!/usr/bin/env bash
# Prints deploy/prometheus/rules/*.yml as one PrometheusRule object for the Prometheus
# Operator (kube-prometheus-stack), which does not read rule files:
#   deploy/k8s/prometheusrule.sh | kubectl apply -n normserve -f -
# Add the label your Prometheus's ruleSelector wants with RULE_LABELS, e.g.
#   RULE_LABELS="release: kube-prometheus-stack" deploy/k8s/prometheusrule.sh | kubectl apply -n normserve -f -
set -euo pipefail
rules_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../prometheus/rules" && pwd)"
cat <<HEAD
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: normserve
  labels:
    app.kubernetes.io/name: normserve
HEAD
if [ -n "${RULE_LABELS:-}" ]; then
  printf '    %s\n' "$RULE_LABELS"
fi
echo "spec:"
echo "  groups:"
for f in "$rules_dir"/*.yml; do
  # Everything after the file's top-level `groups:` line, indented under spec.groups.
  awk 'found { print "  " $0 } /^groups:[[:space:]]*$/ { found = 1 }' "$f"
done
