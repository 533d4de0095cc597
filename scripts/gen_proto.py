"""Generate the Python code of the wire contract: proto/ -> client/gradhealth/v1/.

    python scripts/gen_proto.py          # regenerate
    python scripts/gen_proto.py --check  # fail if the committed code is stale (CI)

The generated modules import each other as `gradhealth.v1.*`, the proto package
path, so they live inside the client package and need no TensorFlow.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from importlib.resources import files
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
OUT = ROOT / "client" / "gradhealth" / "v1"
INIT = '"""Generated from proto/gradhealth/v1 by scripts/gen_proto.py; do not edit."""\n'


def generate(target: Path) -> None:
    from grpc_tools import protoc

    sources = sorted(str(p.relative_to(PROTO)) for p in (PROTO / "gradhealth").rglob("*.proto"))
    well_known = str(files("grpc_tools") / "_proto")
    args = [
        "protoc",
        f"-I{PROTO}",
        f"-I{well_known}",
        f"--python_out={target}",
        f"--pyi_out={target}",
        f"--grpc_python_out={target}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (target / "gradhealth" / "v1" / "__init__.py").write_text(INIT)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / "gradhealth" / "v1"
        names = sorted(p.name for p in fresh.iterdir())
        if args.check:
            current = sorted(p.name for p in OUT.iterdir() if p.is_file()) if OUT.exists() else []
            stale = [
                n
                for n in names
                if n not in current or not filecmp.cmp(fresh / n, OUT / n, shallow=False)
            ]
            extra = [n for n in current if n not in names]
            if stale or extra:
                print(
                    f"generated protobuf code is stale: {stale + extra}; "
                    "run python scripts/gen_proto.py",
                    file=sys.stderr,
                )
                return 1
            print("generated protobuf code is current")
            return 0
        if OUT.exists():
            shutil.rmtree(OUT)
        shutil.copytree(fresh, OUT)
    print(f"wrote {', '.join(names)} to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
