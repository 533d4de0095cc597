"""Generate the Kubernetes PrometheusRule from the alert rules of the local stack:
deploy/prometheus/rules.yml -> deploy/k8s/components/monitoring/prometheusrule.yaml.

    python scripts/gen_k8s_rules.py          # regenerate
    python scripts/gen_k8s_rules.py --check  # fail if the committed file is stale (CI)

A PrometheusRule's spec is a Prometheus rule file (`groups:`), so the rules are
copied as text, indented under `spec:`, comments included; the result is then
parsed back to check that its spec equals the rule file. Needs PyYAML.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
OUT = ROOT / "deploy" / "k8s" / "components" / "monitoring" / "prometheusrule.yaml"
HEADER = """\
# Generated from deploy/prometheus/rules.yml by scripts/gen_k8s_rules.py; do not edit.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: gradhealth
spec:
"""


def render(rules_text: str) -> str:
    rules = yaml.safe_load(rules_text)
    if not isinstance(rules, dict) or not isinstance(rules.get("groups"), list):
        raise ValueError("the rule file must be a mapping with a `groups:` list")
    lines = [line for line in rules_text.splitlines() if line.strip() not in ("---", "...")]
    body = "".join(f"  {line}\n" if line.strip() else "\n" for line in lines)
    text = HEADER + body
    if yaml.safe_load(text)["spec"] != rules:
        raise ValueError("indenting the rule file changed its meaning")
    return text


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument("--rules", type=Path, default=RULES)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    try:
        text = render(args.rules.read_text())
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"gen_k8s_rules: {args.rules}: {exc}", file=sys.stderr)
        return 1
    if not args.check:
        args.out.write_text(text)
        return 0
    if not args.out.is_file() or args.out.read_text() != text:
        print(
            f"gen_k8s_rules: {args.out} is not generated from {args.rules}: "
            "run python scripts/gen_k8s_rules.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
