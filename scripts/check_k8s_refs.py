"""Check what schemas cannot in rendered Kubernetes manifests: that the objects
refer to each other correctly. Used by scripts/check_deploy.sh.

    python scripts/check_k8s_refs.py RENDERED.yaml [--crs OUT.json]

* every ConfigMap and Secret a pod uses (envFrom, volumes) is in the manifests,
  unless the reference is optional;
* each probe's port is a port of its container;
* the selectors of Deployments, Services, PodDisruptionBudgets and
  ServiceMonitors match what they are meant to select, and a ServiceMonitor's
  endpoint port is a port of the Service it selects.

--crs writes the Prometheus Operator objects (monitoring.coreos.com) as a JSON
list, for scripts/validate_crs.mjs. Needs PyYAML.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

Object = dict[str, Any]
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def problems(objects: list[Object]) -> list[str]:
    present = {(o["kind"], o["metadata"]["name"]) for o in objects}
    found: list[str] = []

    def need(kind: str, ref: Object, name_key: str, where: str) -> None:
        name = ref[name_key]
        if not ref.get("optional") and (kind, name) not in present:
            found.append(f"{where}: {kind} {name} is not in the manifests")

    def of_kind(*kinds: str) -> list[Object]:
        return [o for o in objects if o["kind"] in kinds]

    pod_labels = []
    for owner in of_kind("Deployment", "StatefulSet", "DaemonSet"):
        where = f"{owner['kind']}/{owner['metadata']['name']}"
        template = owner["spec"]["template"]
        labels = template["metadata"].get("labels", {})
        pod_labels.append(labels)
        if not _selects(owner["spec"]["selector"], labels):
            found.append(f"{where}: its selector does not match its pod template's labels")
        for volume in template["spec"].get("volumes", []):
            if "secret" in volume:
                need("Secret", volume["secret"], "secretName", f"{where} volume {volume['name']}")
            if "configMap" in volume:
                need("ConfigMap", volume["configMap"], "name", f"{where} volume {volume['name']}")
        for container in template["spec"]["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    need("ConfigMap", source["configMapRef"], "name", f"{where} envFrom")
                if "secretRef" in source:
                    need("Secret", source["secretRef"], "name", f"{where} envFrom")
            ports = {p["containerPort"] for p in container.get("ports", [])}
            ports |= {p["name"] for p in container.get("ports", []) if "name" in p}
            for probe in PROBES:
                for handler in ("grpc", "httpGet", "tcpSocket"):
                    port = container.get(probe, {}).get(handler, {}).get("port")
                    if port is not None and port not in ports:
                        found.append(f"{where} {probe}: port {port} is not a container port")

    services = of_kind("Service")
    for selecting in of_kind("Service", "PodDisruptionBudget"):
        selector = selecting["spec"]["selector"]
        if selecting["kind"] == "Service":
            selector = {"matchLabels": selector}
        if not any(_selects(selector, labels) for labels in pod_labels):
            where = f"{selecting['kind']}/{selecting['metadata']['name']}"
            found.append(f"{where}: its selector matches no pod template")
    for monitor in of_kind("ServiceMonitor"):
        where = f"ServiceMonitor/{monitor['metadata']['name']}"
        selected = [
            s
            for s in services
            if _selects(monitor["spec"]["selector"], s["metadata"].get("labels", {}))
        ]
        if not selected:
            found.append(f"{where}: its selector matches no Service")
        port_names = {p.get("name") for s in selected for p in s["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            if endpoint.get("port") not in port_names:
                found.append(f"{where}: endpoint port {endpoint.get('port')} is not a Service port")
    return found


def _selects(selector: Object, labels: dict[str, str]) -> bool:
    if set(selector) - {"matchLabels"}:
        raise ValueError(f"only matchLabels selectors are checked, not {sorted(selector)}")
    match = selector.get("matchLabels", {})
    return bool(match) and all(labels.get(key) == value for key, value in match.items())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("rendered", type=Path)
    parser.add_argument("--crs", type=Path, help="write the monitoring.coreos.com objects here")
    args = parser.parse_args()
    objects = [o for o in yaml.safe_load_all(args.rendered.read_text()) if o]
    found = problems(objects)
    for problem in found:
        print(f"{args.rendered}: {problem}", file=sys.stderr)
    if args.crs:
        crs = [o for o in objects if o["apiVersion"].startswith("monitoring.coreos.com/")]
        args.crs.write_text(json.dumps(crs))
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
