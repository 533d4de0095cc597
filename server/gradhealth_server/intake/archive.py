"""Inspect a `.keras` archive before Keras touches it.

A `.keras` file is a zip written by `model.save()`: `metadata.json`,
`config.json`, `model.weights.h5` and optionally `assets/`. Anything else, or
anything shaped like an attack on the unzipper (links, traversal, bombs), is
refused here with a message naming the member, so nothing reaches the loader.
"""

from __future__ import annotations

import json
import os
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from gradhealth_server.errors import InvalidCheckpoint, LimitExceeded
from gradhealth_server.intake.limits import DEFAULT_LIMITS, Limits
from gradhealth_server.intake.zip_directory import DirectoryTooLarge, check_directory

REQUIRED_MEMBERS = ("config.json", "model.weights.h5")
OPTIONAL_MEMBERS = ("metadata.json",)
ASSETS_PREFIX = "assets/"
# Below this size a high compression ratio is normal (JSON) and harmless.
RATIO_CHECK_MIN_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ArchiveInfo:
    """What the archive says about itself, read without running any of it."""

    path: Path
    config: dict[str, Any]
    metadata: dict[str, Any]
    members: tuple[str, ...]
    unpacked_bytes: int


def inspect_archive(path: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS) -> ArchiveInfo:
    """Check the zip's structure and read its JSON parts; raise if anything is off."""
    path = Path(path)
    size = path.stat().st_size
    if size > limits.max_checkpoint_bytes:
        raise LimitExceeded(
            f"checkpoint is {size} bytes, over the limit of {limits.max_checkpoint_bytes} bytes"
        )
    if not zipfile.is_zipfile(path):
        raise InvalidCheckpoint(
            "checkpoint is not a zip archive; expected a .keras file written by model.save()"
        )
    try:
        with open(path, "rb") as handle:
            check_directory(handle, limits.max_archive_members, "the checkpoint archive")
    except DirectoryTooLarge as exc:
        raise InvalidCheckpoint(str(exc)) from exc
    except OSError as exc:
        raise InvalidCheckpoint(f"checkpoint zip is corrupt or truncated: {exc}") from exc
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            _check_members(infos, limits)
            config = _read_json(archive, "config.json", limits)
            metadata = (
                _read_json(archive, "metadata.json", limits)
                if "metadata.json" in archive.namelist()
                else {}
            )
    except (
        zipfile.BadZipFile,
        zlib.error,
        EOFError,
        NotImplementedError,
        RuntimeError,
        OSError,
    ) as exc:
        # RuntimeError/NotImplementedError: encrypted or unknown compression methods.
        # OSError: offsets pointing before the start of the file (EINVAL on seek).
        raise InvalidCheckpoint(f"checkpoint zip is corrupt or truncated: {exc}") from exc
    if not isinstance(config, dict) or "class_name" not in config:
        raise InvalidCheckpoint("config.json does not describe a Keras model (no class_name)")
    return ArchiveInfo(
        path=path,
        config=config,
        metadata=metadata if isinstance(metadata, dict) else {},
        members=tuple(info.filename for info in infos),
        unpacked_bytes=sum(info.file_size for info in infos),
    )


def _check_members(infos: list[zipfile.ZipInfo], limits: Limits) -> None:
    if len(infos) > limits.max_archive_members:
        raise InvalidCheckpoint(
            f"archive has {len(infos)} members, more than the {limits.max_archive_members} allowed"
        )
    seen: set[str] = set()
    total = 0
    for info in infos:
        name = info.filename
        _check_member_name(name)
        if name in seen:
            raise InvalidCheckpoint(f"archive member {name!r} appears twice")
        seen.add(name)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise InvalidCheckpoint(f"archive member {name!r} is a symbolic link")
        if info.flag_bits & 0x1:
            raise InvalidCheckpoint(f"archive member {name!r} is encrypted")
        if info.is_dir():
            if name.startswith(ASSETS_PREFIX):
                continue
            raise InvalidCheckpoint(f"unexpected directory {name!r} in the archive")
        if name not in REQUIRED_MEMBERS + OPTIONAL_MEMBERS and not name.startswith(ASSETS_PREFIX):
            raise InvalidCheckpoint(
                f"unexpected archive member {name!r}; a .keras archive holds "
                "config.json, metadata.json, model.weights.h5 and assets/"
            )
        total += info.file_size
        if info.file_size >= RATIO_CHECK_MIN_BYTES:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > limits.max_compression_ratio:
                raise LimitExceeded(
                    f"archive member {name!r} expands {ratio:.0f}x "
                    f"(limit {limits.max_compression_ratio:.0f}x); refusing a possible zip bomb"
                )
    if total > limits.max_unpacked_bytes:
        raise LimitExceeded(
            f"archive unpacks to {total} bytes, over the limit of {limits.max_unpacked_bytes}"
        )
    missing = [m for m in REQUIRED_MEMBERS if m not in seen]
    if missing:
        raise InvalidCheckpoint(f"archive lacks {', '.join(missing)}; is this a .keras file?")


def _check_member_name(name: str) -> None:
    pure = PurePosixPath(name)
    if (
        not name
        or "\\" in name
        or "\x00" in name
        or pure.is_absolute()
        or ".." in pure.parts
        or (len(name) > 1 and name[1] == ":")
    ):
        raise InvalidCheckpoint(f"archive member name {name!r} is unsafe (absolute or traversal)")


def _read_json(archive: zipfile.ZipFile, name: str, limits: Limits) -> Any:
    info = archive.getinfo(name)
    if info.file_size > limits.max_config_bytes:
        raise LimitExceeded(f"{name} is {info.file_size} bytes, over {limits.max_config_bytes}")
    with archive.open(info) as member:
        raw = member.read(limits.max_config_bytes + 1)
    if len(raw) > limits.max_config_bytes:
        raise LimitExceeded(f"{name} is larger than {limits.max_config_bytes} bytes")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, huge ints, deep nesting
        raise InvalidCheckpoint(f"{name} is not valid JSON: {str(exc)[:200]}") from exc
