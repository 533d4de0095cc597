"""The deployment artefacts against the real server: the container's command
line and environment start a server that passes the image's own health check,
the Kubernetes and compose settings agree with the image, and every serve flag
has its environment variable and its row in the README's configuration table.

The image itself is not built here (no Docker daemon); scripts/check_deploy.sh
lints and validates the files.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import yaml
from grpc_health.v1 import health_pb2

from tests.service import ServerProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"


def dockerfile() -> dict:
    """The final stage of deploy/Dockerfile: ENV, COPY, USER, WORKDIR, EXPOSE,
    ENTRYPOINT, CMD and the HEALTHCHECK command, as the image has them."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    instructions = [line.split(None, 1) for line in lines if line and not line.startswith("#")]
    final = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    image: dict = {"ENV": {}, "COPY": {}, "EXPOSE": []}
    for op, rest in instructions[final:]:
        if op == "ENV":
            image["ENV"].update(word.split("=", 1) for word in shlex.split(rest))
        elif op == "COPY" and not rest.startswith("--from="):  # a file of the repository
            source, target = rest.split()
            image["COPY"][target] = source
        elif op == "EXPOSE":
            image["EXPOSE"] += [int(port) for port in rest.split()]
        elif op in ("ENTRYPOINT", "CMD"):
            image[op] = json.loads(rest)
        elif op == "HEALTHCHECK":
            image[op] = json.loads(rest.split(" CMD ", 1)[1])
        elif op != "COPY":
            image[op] = rest
    return image


IMAGE = dockerfile()
HOME = IMAGE["WORKDIR"]


def as_container_runs(argv: list[str], copies: dict[str, str]) -> list[str]:
    """A command of the image, run here: its Python and its console script are
    this interpreter, the files it copied in are the repository's."""
    program = {"python": [sys.executable], "gradhealth": [sys.executable, "-m", "gradhealth.cli"]}
    local = [str(ROOT / copies[a]) if a in copies else a for a in argv[1:]]
    return program[argv[0]] + local


def container_environment(workdir: Path, port: int, metrics_port: int) -> dict[str, str]:
    """The image's ENV as the container gets it, but for what a run on loopback
    must change: the address (loopback, not every interface), the two ports,
    and the home directory (HOME, the SQLite file, the spool), mounted on
    `workdir`. PATH is this machine's."""
    changed = {
        "GRADHEALTH_HOST": "127.0.0.1",
        "GRADHEALTH_PORT": str(port),
        "GRADHEALTH_METRICS_PORT": str(metrics_port),
        "GRADHEALTH_METRICS_HOST": "127.0.0.1",
    }
    environment = {
        key: value.replace(HOME, str(workdir))
        for key, value in IMAGE["ENV"].items()
        if key != "PATH"
    }
    assert changed.keys() <= environment.keys()
    outer = {k: v for k, v in os.environ.items() if not k.startswith("GRADHEALTH_")}
    return {**outer, **environment, **changed}


def test_the_container_command_serves_and_passes_its_health_check(tmp_path):
    server = ServerProcess(tmp_path, port=free_port())  # its log, ports and helpers
    home = tmp_path / "home"  # the image's WORKDIR, as a volume
    home.mkdir()
    env = container_environment(home, server.port, server.metrics_port)
    command = as_container_runs(IMAGE["ENTRYPOINT"] + IMAGE["CMD"], IMAGE["COPY"])
    healthcheck = as_container_runs(IMAGE["HEALTHCHECK"], IMAGE["COPY"])

    def health_check() -> subprocess.CompletedProcess:
        return subprocess.run(
            healthcheck, env=env, capture_output=True, text=True, timeout=30, check=False
        )

    with open(server.log_path, "ab") as log:
        server.process = subprocess.Popen(
            command, env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        assert health_check().returncode == 1  # TensorFlow takes seconds to load
        server.wait_serving()
        done = health_check()
        assert done.returncode == 0, done.stderr
        assert f"127.0.0.1:{server.port}: SERVING" in done.stdout
        assert server.metric("gradhealth_queue_capacity") == 8
        # The settings the image gives by environment took effect.
        assert (home / "gradhealth.db").is_file()  # GRADHEALTH_DB
        assert (home / "spool").is_dir()  # GRADHEALTH_SPOOL_DIR
        assert server.health() == health_pb2.HealthCheckResponse.SERVING
    finally:
        code = server.stop(signal.SIGTERM)  # what `docker stop` sends
    assert code == 0, server.log()
    assert "gradhealth stopped" in server.log()


def test_a_bad_environment_value_is_one_line_and_exit_2(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "GRADHEALTH_PORT": "abc"}
    done = subprocess.run(
        [sys.executable, "-m", "gradhealth.cli", "serve"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == "gradhealth: error: GRADHEALTH_PORT: invalid int value: 'abc'\n"


def serve_actions() -> list:
    """The serve flags as the code declares them, whatever this shell's GRADHEALTH_*."""
    from gradhealth.cli import _parser

    outer = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("GRADHEALTH_")}
    try:
        parser, _ = _parser()
    finally:
        os.environ.update(outer)
    serve = next(a for a in parser._actions if a.dest == "command").choices["serve"]
    return [a for a in serve._actions if a.option_strings and a.dest != "help"]


def parse_serve(monkeypatch, environment: dict[str, str], *argv: str):
    from gradhealth.cli import _parser
    from gradhealth.cli.options import BadEnvironmentValue

    for key in [k for k in os.environ if k.startswith("GRADHEALTH_")]:
        monkeypatch.delenv(key)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    try:
        return _parser()[0].parse_args(["serve", *argv])
    except BadEnvironmentValue as exc:
        return exc


def test_every_serve_flag_reads_its_environment_variable_and_the_flag_wins(monkeypatch):
    samples = {int: ("7", 7), float: ("7.5", 7.5), Path: ("/x", Path("/x")), None: ("s", "s")}
    for action in serve_actions():
        name = "GRADHEALTH_" + action.dest.upper()
        if action.nargs == 0:  # a switch
            for text, value in (("1", True), ("yes", True), ("0", False), ("", action.default)):
                assert getattr(parse_serve(monkeypatch, {name: text}), action.dest) is value
            continue
        text, value = samples[action.type]
        other = "9"
        if action.choices:  # --log-format: one of its choices
            text, value, other = action.choices[-1], action.choices[-1], action.choices[0]
        assert getattr(parse_serve(monkeypatch, {name: text}), action.dest) == value, name
        flag = action.option_strings[-1]
        given = parse_serve(monkeypatch, {name: text}, flag, other)
        assert getattr(given, action.dest) == (action.type or str)(other), name
    # A bad variable is harmless when the flag overrides it, and names itself otherwise.
    assert parse_serve(monkeypatch, {"GRADHEALTH_PORT": "abc"}, "--port", "1").port == 1
    error = parse_serve(monkeypatch, {"GRADHEALTH_NO_XLA": "maybe"})
    assert str(error) == "GRADHEALTH_NO_XLA: invalid boolean value: 'maybe'"


def readme_configuration() -> dict[str, tuple[str, str]]:
    """The README's configuration table: flag -> (env var, default)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        if line.startswith("| `--"):
            flag, env, default = (cell.strip().strip("`") for cell in line.split("|")[1:4])
            rows[flag] = (env, default)
    return rows


def test_the_readme_table_lists_every_serve_flag_with_its_variable_and_default():
    def shown(default: object) -> str:
        if default is None:
            return "none"
        if default is False:
            return "off"
        return f"{default:g}" if isinstance(default, float) else str(default)

    expected = {
        action.option_strings[-1]: ("GRADHEALTH_" + action.dest.upper(), shown(action.default))
        for action in serve_actions()
    }
    assert readme_configuration() == expected


def k8s_settings() -> dict[str, str]:
    lines = (K8S / "base" / "settings.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_the_build_context_lets_in_what_the_dockerfile_copies():
    text = (DEPLOY / "Dockerfile").read_text()
    copied = {
        source
        for line in re.findall(r"^COPY (?!--from=)(.+)$", text, re.MULTILINE)
        for source in line.split()[:-1]
    }
    allowed = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert copied and all(f"!{source}" in allowed or f"!{source}/" in allowed for source in copied)
    assert (ROOT / IMAGE["COPY"]["/opt/gradhealth/healthcheck.py"]).is_file()


def test_kubernetes_and_compose_agree_with_the_image():
    settings = k8s_settings()
    env = {**IMAGE["ENV"], **settings}
    port, metrics_port = int(env["GRADHEALTH_PORT"]), int(env["GRADHEALTH_METRICS_PORT"])
    assert sorted(IMAGE["EXPOSE"]) == sorted([port, metrics_port])

    deployment = yaml.safe_load((K8S / "base" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "command" not in container and "args" not in container  # the image's own
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": port, "metrics": metrics_port}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == port, probe
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert settings["GRADHEALTH_WORKERS"] == "1"  # one worker per GPU
    # Draining must end before the kubelet's SIGKILL.
    assert pod["terminationGracePeriodSeconds"] > float(env["GRADHEALTH_GRACE"]) + 10
    assert pod["securityContext"]["runAsUser"] == int(IMAGE["USER"].split(":")[0])

    # The root filesystem is read-only: whatever the server writes is on a volume.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}

    def mounted(path: str, writable: bool = True) -> bool:
        return any(
            (path + "/").startswith(m.rstrip("/") + "/")
            and (not writable or not mounts[m].get("readOnly"))
            for m in mounts
        )

    assert mounted(env["GRADHEALTH_DB"].removeprefix("sqlite:///"))
    assert mounted(env["GRADHEALTH_SPOOL_DIR"]) and mounted("/tmp") and mounted(HOME)
    assert mounted(env["GRADHEALTH_TOKEN_FILE"], writable=False)
    # XLA's executables outlive a worker or container restart (a GPU compiles with XLA).
    assert mounted(settings["GRADHEALTH_COMPILE_CACHE"])
    assert settings["GRADHEALTH_TOKEN_FILE"].endswith("/token")  # the Secret's key

    service = yaml.safe_load((K8S / "base" / "service.yaml").read_text())
    assert service["spec"]["clusterIP"] == "None"  # headless: client-side round_robin
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == ports

    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    gradhealth = compose["services"]["gradhealth"]
    published = {int(p.rsplit(":", 1)[1]) for p in gradhealth["ports"]}
    assert published == {port, metrics_port}
    spool = IMAGE["ENV"]["GRADHEALTH_SPOOL_DIR"]
    assert any(volume.endswith(":" + spool) for volume in gradhealth["volumes"])
    assert gradhealth["environment"]["GRADHEALTH_DB"].startswith("postgresql+psycopg://")
    assert int(gradhealth["stop_grace_period"].rstrip("s")) > float(env["GRADHEALTH_GRACE"])
    gpu = yaml.safe_load((DEPLOY / "compose.gpu.yaml").read_text())["services"]["gradhealth"]
    cache = gpu["environment"]["GRADHEALTH_COMPILE_CACHE"]
    assert "xla-cache:" + cache in gpu["volumes"]
    # The image holds that directory, the user's alone, for a fresh named volume to copy.
    assert (
        f"install -d -m 0700 -o gradhealth -g gradhealth {cache}"
        in (DEPLOY / "Dockerfile").read_text()
    )
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == [
        f"gradhealth:{metrics_port}"
    ]
