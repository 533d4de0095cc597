"""Generate the Kubernetes PrometheusRule from the alert rules of the local stack:
deploy/prometheus/rules.yml -> deploy/k8s/components/monitoring/prometheusrule.yaml.

    python scripts/gen_k8s_rules.py          # regenerate
    python scripts/gen_k8s_rules.py --check  # fail if the committed file is stale (CI)
    python scripts/gen_k8s_rules.py --runbook-base https://git.example.com/ml/gradhealth/-/blob/main/docs/runbook.md

Runbook links: every alert's `runbook_url` is one base URL and the alert's
section anchor (`<base>#gradhealthrunstalled`), absolute so that any receiver
(a pager, a chat message, a phone) can open it. The base is the one in
rules.yml; `--runbook-base URL` rewrites it in rules.yml, then regenerates.
The default, http://localhost:9095/runbook, is the local stack's alert
receiver, which serves docs/runbook.md; point it at where your team reads
the runbook (your git host's view of docs/runbook.md, a wiki).

A PrometheusRule's spec is a Prometheus rule file (`groups:`), so the rules are
copied as text, indented under `spec:`, comments included; the result is then
parsed back to check that its spec equals the rule file. Needs PyYAML.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_LINE = re.compile(r"^(\s*runbook_url:\s*)(\S+?)#(\S+)\s*$", re.MULTILINE)
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


def runbook_anchors(markdown: str) -> set[str]:
    """The anchors of the runbook's headings, as GitHub and the receiver make them."""
    return {
        re.sub(r"[^a-z0-9 _-]", "", m[1].strip().lower()).replace(" ", "-")
        for m in re.finditer(r"^#{1,6} (.+)$", markdown, re.MULTILINE)
    }


def runbook_base(rules: dict, anchors: set[str] | None = None) -> str:
    """The one base of every alert's runbook_url; ValueError unless each is
    absolute, shares it, and names a section of docs/runbook.md."""
    bases = set()
    for group in rules["groups"]:
        for rule in group.get("rules", []):
            if "alert" not in rule:
                continue
            url = (rule.get("annotations") or {}).get("runbook_url", "")
            base, _, anchor = url.partition("#")
            if not re.match(r"https?://[^/]+", base) or not anchor:
                raise ValueError(
                    f"{rule['alert']}: runbook_url {url!r} is not absolute BASE#ANCHOR"
                )
            if anchors is not None and anchor not in anchors:
                raise ValueError(f"{rule['alert']}: docs/runbook.md has no section #{anchor}")
            bases.add(base)
    if len(bases) != 1:
        raise ValueError(f"the alerts' runbook_url must share one base, not {sorted(bases)}")
    return bases.pop()


def with_runbook_base(rules_text: str, base: str) -> str:
    if not re.match(r"https?://[^/\s]+", base) or "#" in base:
        raise ValueError(f"--runbook-base {base!r}: an absolute http(s) URL without #")
    return RUNBOOK_LINE.sub(lambda m: f"{m[1]}{base.rstrip('/')}#{m[3]}", rules_text)


def render(rules_text: str) -> str:
    rules = yaml.safe_load(rules_text)
    if not isinstance(rules, dict) or not isinstance(rules.get("groups"), list):
        raise ValueError("the rule file must be a mapping with a `groups:` list")
    runbook_base(rules, runbook_anchors(RUNBOOK.read_text()) if RUNBOOK.is_file() else None)
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
    parser.add_argument(
        "--runbook-base", metavar="URL", help="rewrite every runbook_url of the rules to URL#ANCHOR"
    )
    args = parser.parse_args()
    try:
        if args.runbook_base:
            args.rules.write_text(with_runbook_base(args.rules.read_text(), args.runbook_base))
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
