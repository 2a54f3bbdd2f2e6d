#!/usr/bin/env bash
# lint-deploy.sh — checks the deploy files with real tools from PyPI (installed once into a venv in
# the local cache): Kubernetes manifests against the API schemas (kubernetes-validate, offline), and
# every YAML file parsed, the alert rules' shape checked. Exit non-zero on any finding.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="$(realpath -m "${OUTFLOW_LOCAL_CACHE:-$HERE/.cache}")/lint-venv"
if ! "$VENV/bin/python" -c 'import kubernetes_validate, yaml' 2>/dev/null; then
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q --disable-pip-version-check 'kubernetes-validate==1.37.0' 'PyYAML==6.0.3' >&2
fi
"$VENV/bin/kubernetes-validate" --strict -k 1.33.0 "$ROOT"/deploy/k8s/*.yaml
"$VENV/bin/python" - "$ROOT" <<'PY'
import glob, json, sys, yaml
root = sys.argv[1]
problems = []
for path in sorted(glob.glob(f"{root}/deploy/**/*.y*ml", recursive=True)):
    try:
        docs = list(yaml.safe_load_all(open(path)))
    except yaml.YAMLError as e:
        problems.append(f"{path}: {e}")
        continue
    if path.endswith("prometheus/alerts.yml"):
        for group in docs[0]["groups"]:
            for rule in group["rules"]:
                for key in ("alert", "expr", "for", "labels", "annotations"):
                    if key not in rule:
                        problems.append(f"{path}: rule {rule.get('alert', '?')} lacks `{key}`")
    if path.endswith("compose/compose.yaml"):
        services = docs[0].get("services", {})
        for name, s in services.items():
            if "image" not in s and "build" not in s:
                problems.append(f"{path}: service {name} has neither image nor build")
            for dep in (s.get("depends_on") or {}):
                if dep not in services:
                    problems.append(f"{path}: service {name} depends on unknown {dep}")
json.load(open(f"{root}/deploy/grafana/outflow.json"))
for p in problems:
    print(p)
print(f"deploy lint: {len(problems)} problem(s)")
sys.exit(1 if problems else 0)
PY
