#!/usr/bin/env bash
# Validates conf/kubernetes.yaml offline: Kubernetes schemas, Pod Security "restricted", the
# project's own rules (deploy/check_kubernetes.py), the config checksum, and, when a built
# gateway binary is at hand, `upload-gateway check` on the ConfigMap's gateway.toml.
#
#   deploy/check-kubernetes.sh [MANIFEST]        # default: conf/kubernetes.yaml
#
# Installs what it needs on a fresh Debian machine: python3 and python3-venv from apt (as root)
# when missing, then kubernetes-validate (which bundles the Kubernetes JSON schemas) from PyPI
# into a virtualenv. After that first run it needs no network.
#
# Environment:
#   KUBERNETES_VERSIONS  schema versions to validate against (default "1.30.0 1.34.0 1.37.0":
#                        1.30 is the oldest release with the preStop sleep action on by default)
#   K8S_CHECK_VENV       where the virtualenv lives (default ~/.cache/upload-gateway/k8s-check)
#   UPLOAD_GATEWAY_BIN   gateway binary for the config check (default: target/release/upload-gateway,
#                        then upload-gateway on PATH; skipped when there is none)
# Exits non-zero on any problem.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
manifest="${1:-$repo/conf/kubernetes.yaml}"
reference="$repo/conf/gateway.toml"
versions="${KUBERNETES_VERSIONS:-1.30.0 1.34.0 1.37.0}"
venv="${K8S_CHECK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/upload-gateway/k8s-check}"
kv_version="1.37.0"   # kubernetes-validate: schemas for Kubernetes 1.25 ... 1.37

[ -f "$manifest" ] || { echo "check-kubernetes: no such file: $manifest" >&2; exit 2; }
failed=0

echo "== tools"
# python3 >= 3.11 (tomllib) with a working venv module; Debian ships venv as python3-venv.
if ! python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "check-kubernetes: needs python3 >= 3.11 with venv (Debian: apt-get install python3 python3-venv)" >&2
    exit 2
  fi
  echo "installing python3 python3-venv (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
fi
if ! "$venv/bin/python" -c "import sys, yaml, kubernetes_validate as kv; sys.exit(kv.__version__ != '$kv_version')" 2>/dev/null; then
  echo "installing kubernetes-validate $kv_version into $venv (PyPI)"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv --clear "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "kubernetes-validate==$kv_version"
fi
py="$venv/bin/python"
echo "python: $("$py" --version 2>&1); kubernetes-validate $("$py" -c 'import kubernetes_validate as kv; print(kv.__version__)'); PyYAML $("$py" -c 'import yaml; print(yaml.__version__)')"

# Schemas, Pod Security "restricted", project rules, and the self-test that each of them
# rejects a deliberately broken copy.
version_args=()
for v in $versions; do version_args+=(-k "$v"); done
"$py" "$here/check_kubernetes.py" "$manifest" --reference "$reference" "${version_args[@]}" --self-test \
  || failed=1

echo
echo "== config checksum (deploy/update-config-checksum.sh --check)"
PATH="$venv/bin:$PATH" "$here/update-config-checksum.sh" --check "$manifest" || failed=1

echo
echo "== upload-gateway check on the ConfigMap's gateway.toml"
bin="${UPLOAD_GATEWAY_BIN:-}"
if [ -z "$bin" ] && [ -x "$repo/target/release/upload-gateway" ]; then bin="$repo/target/release/upload-gateway"; fi
if [ -z "$bin" ]; then bin="$(command -v upload-gateway || true)"; fi
if [ -z "$bin" ]; then
  echo "  skipped: no gateway binary (build it, or set UPLOAD_GATEWAY_BIN)"
else
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  # Upstream names are resolved at run time, so the cluster's Service names need not resolve
  # here; `check` does bind the listeners for a moment (ports 8080 and 9091 must be free).
  "$py" - "$manifest" "$tmp/gateway.toml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1], encoding="utf-8")) if d]
text = next(d for d in docs if d.get("kind") == "ConfigMap")["data"]["gateway.toml"]
open(sys.argv[2], "w", encoding="utf-8").write(text)
PY
  if out="$("$bin" check --config "$tmp/gateway.toml" 2>&1)"; then
    echo "  ok    $bin accepts it"
  else
    echo "  FAIL  $bin refuses it:"
    printf '%s\n' "$out" | sed 's/^/        /'
    failed=1
  fi
fi

echo
if [ "$failed" -ne 0 ]; then
  echo "check-kubernetes: FAILED ($manifest)"
  exit 1
fi
echo "check-kubernetes: all checks passed ($manifest)"
