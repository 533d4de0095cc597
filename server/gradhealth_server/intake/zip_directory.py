"""Size a zip's central directory from its end record, before parsing it.

`zipfile.ZipFile()` parses the whole central directory when it opens a file,
so a 30 MB upload listing 10^6 members costs hundreds of MB and tens of seconds
before any member cap could be checked. The end-of-central-directory record (the
last 22 bytes, or the zip64 record it points to) states the entry count and the
directory's size: both are read and checked here, and `zipfile` opens the file
only after. Used for the checkpoint archive and for the `.npz` batch.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from typing import BinaryIO

# A central-directory entry is 46 bytes plus its name, extra field and comment.
# Keras's and numpy's names are short; 4 KiB a member is generous.
MAX_ENTRY_BYTES = 4096


@dataclass(frozen=True)
class Directory:
    entries: int
    size: int  # bytes of the central directory


class DirectoryTooLarge(Exception):
    """The end record declares more members, or a larger directory, than allowed."""


def read_directory(handle: BinaryIO) -> Directory | None:
    """The end record's entry count and directory size; None if there is none
    (not a zip). Uses zipfile's own reader of that record, which handles zip64."""
    handle.seek(0)
    end = zipfile._EndRecData(handle)
    if end is None:
        return None
    return Directory(entries=end[zipfile._ECD_ENTRIES_TOTAL], size=end[zipfile._ECD_SIZE])


def check_directory(handle: BinaryIO, max_members: int, what: str) -> None:
    """Refuse a zip whose directory declares more than `max_members` entries or
    more bytes than that many entries need, without parsing any entry."""
    directory = read_directory(handle)
    handle.seek(0)
    if directory is None:
        return  # zipfile says "not a zip file" in its own words
    if directory.entries > max_members:
        raise DirectoryTooLarge(
            f"{what} lists {directory.entries:,} members, more than the {max_members} allowed"
        )
    if directory.size > max_members * MAX_ENTRY_BYTES:
        raise DirectoryTooLarge(
            f"{what}'s central directory is {directory.size:,} bytes, more than "
            f"{max_members} members need ({max_members * MAX_ENTRY_BYTES:,})"
        )
