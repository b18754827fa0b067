#!/usr/bin/env bash
# Validate the Kubernetes manifests with kubernetes-validate --strict (schemas ship with it).
# The CRDs (CNPG's Pooler, Prometheus Operator's PodMonitor) and the Kustomization have no
# bundled schema; they are parsed as YAML and their kind checked. compose.yaml is parsed (its
# config files are served by tests/deploy_configs.rs).
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
pooler = yaml.safe_load(open("cnpg/pooler.yaml"))
if "pgmux" not in pooler["spec"]["pgbouncer"].get("image", ""):
    sys.exit("cnpg/pooler.yaml: spec.pgbouncer.image is not the pgmux image")
compose = yaml.safe_load(open("compose.yaml"))
if set(compose.get("services", {})) != {"postgres", "pgmux"}:
    sys.exit("compose.yaml: expected services postgres and pgmux")
print("manifests: ok")
PY
