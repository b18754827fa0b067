#!/usr/bin/env bash
# Validate the Kubernetes manifests with kubernetes-validate --strict (schemas ship with it).
# The CRDs (CNPG's Pooler, Prometheus Operator's PodMonitor) and the Kustomization have no
# bundled schema; they are parsed as YAML and their kind checked.
set -euo pipefail
cd "$(dirname "$0")"
kubernetes-validate --strict --quiet \
  kubernetes/configmap.yaml kubernetes/secret.yaml kubernetes/deployment.yaml \
  kubernetes/service.yaml kubernetes/pdb.yaml
python3 - <<'PY'
import sys, yaml
for path, kind in [("kubernetes/podmonitor.yaml", "PodMonitor"),
                   ("kubernetes/kustomization.yaml", "Kustomization"),
                   ("cnpg/pooler.yaml", "Pooler")]:
    doc = yaml.safe_load(open(path))
    if doc.get("kind") != kind:
        sys.exit(f"{path}: expected kind {kind}, got {doc.get('kind')}")
print("manifests: ok")
PY
