#!/usr/bin/env bash
# Validate the Kubernetes manifests with kubernetes-validate --strict (schemas ship with it).
# The CRDs (CNPG's Pooler, Prometheus Operator's PodMonitor) and the Kustomization have no
# bundled schema; they are parsed as YAML and their kind checked. compose.yaml is parsed (its
# config files are served by tests/deploy_configs.rs).
set -euo pipefail
cd "$(dirname "$0")"
kubernetes-validate --strict --quiet \
  kubernetes/configmap.yaml kubernetes/secret.yaml kubernetes/deployment.yaml \
  kubernetes/service.yaml kubernetes/pdb.yaml \
  kubernetes-peered/configmap.yaml kubernetes-peered/statefulset.yaml \
  kubernetes-peered/service-peers.yaml
# where kubectl is installed, also render both kustomizations and validate what they produce
if command -v kubectl >/dev/null; then
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
  for k in kubernetes kubernetes-peered; do
    kubectl kustomize "$k" >"$out/$k.yaml"
    # the CRDs (PodMonitor) have no bundled schema: validate the core kinds only
    python3 - "$out/$k.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
core = [d for d in docs if d["kind"] not in ("PodMonitor",)]
with open(sys.argv[1], "w") as f:
    yaml.safe_dump_all(core, f)
print(sys.argv[1].rsplit("/", 1)[1] + ": " + ", ".join(sorted(d["kind"] for d in docs)))
PY
    kubernetes-validate --strict --quiet "$out/$k.yaml"
  done
fi
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
