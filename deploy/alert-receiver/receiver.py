"""An example Alertmanager receiver: logs every alert it is sent, one line each.

    python receiver.py [--host 0.0.0.0] [--port 9095] [--runbook docs/runbook.md] [--json]

Alertmanager's webhook (deploy/alertmanager/alertmanager.yml) POSTs its
notifications here; each alert becomes one log line on stdout with its status
(firing/resolved), name, severity, run id or instance, summary and runbook
URL, which `docker compose logs alert-receiver` shows. Replace it with your
pager, chat or ticket receiver; the payload is Alertmanager's webhook format
(version 4).

It also serves the runbook (GET /runbook: docs/runbook.md as a plain HTML page
with an anchor per alert), so the runbook URLs of the local stack's alerts
open in a browser. Standard library only; a body over 1 MiB is refused.
GET /healthz answers "ok".
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import re
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_BODY = 1024 * 1024
PRINTING = threading.Lock()


def alert_lines(payload: dict, as_json: bool = False) -> list[str]:
    """One line per alert of an Alertmanager webhook payload."""
    lines = []
    for alert in payload.get("alerts") or []:
        labels = alert.get("labels") or {}
        annotations = alert.get("annotations") or {}
        record = {
            "status": alert.get("status", payload.get("status", "?")),
            "alertname": labels.get("alertname", "?"),
            "severity": labels.get("severity", ""),
            "run_id": labels.get("run_id", ""),
            "primary_cause": labels.get("primary_cause", ""),
            "instance": labels.get("instance", ""),
            "summary": annotations.get("summary", ""),
            "runbook_url": annotations.get("runbook_url", ""),
            "starts_at": alert.get("startsAt", ""),
            "receiver": payload.get("receiver", ""),
        }
        if as_json:
            lines.append(json.dumps(record, sort_keys=True))
            continue
        subject = (
            f"run={record['run_id']}" if record["run_id"] else f"instance={record['instance']}"
        )
        cause = f" cause={record['primary_cause']}" if record["primary_cause"] else ""
        summary = " ".join(record["summary"].split())
        lines.append(
            f"{record['status'].upper()} {record['alertname']} severity={record['severity']} "
            f"{subject}{cause}: {summary} runbook={record['runbook_url']}"
        )
    return lines


def runbook_html(markdown: str) -> str:
    """The runbook as HTML: headings get the anchors GitHub would give them,
    code blocks stay preformatted, the rest is escaped text in paragraphs."""
    out, paragraph, code = [], [], None
    for line in markdown.splitlines():
        if code is not None:
            if line.startswith("```"):
                out.append(f"<pre>{html.escape(chr(10).join(code))}</pre>")
                code = None
            else:
                code.append(line)
            continue
        if line.startswith("```"):
            code = []
            continue
        heading = re.match(r"(#{1,6}) (.*)", line)
        if (heading or not line.strip()) and paragraph:
            out.append(f"<p>{html.escape(' '.join(paragraph))}</p>")
            paragraph = []
        if heading:
            level, text = len(heading[1]), heading[2].strip()
            anchor = re.sub(r"[^a-z0-9 _-]", "", text.lower()).replace(" ", "-")
            out.append(f'<h{level} id="{anchor}">{html.escape(text)}</h{level}>')
        elif line.strip():
            paragraph.append(line.strip())
    if paragraph:
        out.append(f"<p>{html.escape(' '.join(paragraph))}</p>")
    body = "\n".join(out)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>gradhealth runbook</title><style>body{font-family:sans-serif;max-width:52em;"
        "margin:1em auto}pre{background:#f4f4f4;padding:.5em;overflow:auto}</style></head>"
        f"<body>{body}</body></html>"
    )


class Handler(BaseHTTPRequestHandler):
    server_version = "gradhealth-alert-receiver"
    as_json = False
    runbook: Path | None = None

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            self._answer(HTTPStatus.BAD_REQUEST, "a JSON body of at most 1 MiB\n")
            return
        try:
            payload = json.loads(self.rfile.read(length))
            lines = alert_lines(payload, self.as_json)
        except (ValueError, AttributeError, TypeError):
            self._answer(HTTPStatus.BAD_REQUEST, "not an Alertmanager webhook payload\n")
            return
        with PRINTING:  # notifications arrive on several threads at once
            sys.stdout.write("".join(f"{line}\n" for line in lines))
            sys.stdout.flush()
        self._answer(HTTPStatus.OK, "ok\n")

    def do_GET(self) -> None:
        path = self.path.split("?")[0].split("#")[0]
        if path == "/healthz":
            self._answer(HTTPStatus.OK, "ok\n")
        elif path in ("/runbook", "/runbook.md") and self.runbook and self.runbook.is_file():
            page = runbook_html(self.runbook.read_text(encoding="utf-8"))
            self._answer(HTTPStatus.OK, page, "text/html; charset=utf-8")
        else:
            self._answer(HTTPStatus.NOT_FOUND, "not found\n")

    def _answer(self, status: HTTPStatus, body: str, kind: str = "text/plain") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # requests: stderr, dated
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        sys.stderr.write(f"{stamp} {self.address_string()} {format % args}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    parser.add_argument("--port", type=int, default=9095, help="port (default: %(default)s)")
    parser.add_argument("--runbook", type=Path, help="serve this runbook.md at /runbook")
    parser.add_argument("--json", action="store_true", help="log JSON lines")
    args = parser.parse_args(argv)
    Handler.as_json = args.json
    Handler.runbook = args.runbook
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"alert receiver on {args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
