#!/usr/bin/env bash
# Checks deploy/k8s offline, as no cluster can be run here: renders every
# overlay with kustomize, validates the output against Kubernetes' own
# schemas (kubernetes-validate --strict, at the oldest release with native
# sidecars on by default, 1.29, and at the newest it knows), runs checkov's
# security checks (deploy/k8s/.checkov.yaml says what it skips and why).
# Installs what it needs. (Custom resources, Prometheus Operator's
# PodMonitor, have no schema there: kubernetes-validate warns and passes
# them.)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source scripts/lib.sh
STATE=${MALL_STATE_DIR:-$ROOT/.mall}
mkdir -p "$STATE"
ensure_k8s_tools "$STATE"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
failed=0
for overlay in deploy/k8s/overlays/*/; do
  name=$(basename "$overlay")
  rendered="$out/$name.yaml"
  if ! "$KUSTOMIZE" build "$overlay" >"$rendered"; then
    log "kustomize could not render $overlay"; failed=1; continue
  fi
  kinds=$(grep -c '^kind:' "$rendered")
  for version in 1.29.0 1.37.0; do
    if ! "$KUBERNETES_VALIDATE" --strict --quiet --no-warn -k "$version" "$rendered"; then
      log "$overlay: not valid for Kubernetes $version"; failed=1
    fi
  done
  # --skip-download: no call to Prisma Cloud (checks run from the package).
  if ! "$CHECKOV" --config-file deploy/k8s/.checkov.yaml --skip-download -f "$rendered" >"$out/$name.checkov" 2>&1; then
    cat "$out/$name.checkov" >&2
    log "$overlay: checkov found a failed check"; failed=1
  else
    log "$overlay: $kinds resources, valid for Kubernetes 1.29 and 1.37, $(grep -o 'Passed checks: [0-9]*, Failed checks: [0-9]*' "$out/$name.checkov")"
  fi
done
[ "$failed" -eq 0 ] || die "the Kubernetes manifests have problems (above)"
log "The Kubernetes manifests check out"
