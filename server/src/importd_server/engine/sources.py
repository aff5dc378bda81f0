"""Files the server reads itself (`source_uri`), confined to the tenant's own folder.

Errors speak in paths relative to that folder: a caller never learns the server's folders.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from importd_server.errors import FailedPrecondition, InvalidArgument, excerpt
from importd_server.tenants import Tenant

FIELD = "spec.source_uri"
# How much of a path an error repeats: the URI is the caller's and may be huge.
SHOWN_PATH_CHARS = 200
# No link followed at the last step (the path is already resolved), and no wait for a
# writer if a FIFO was swapped in: the descriptor is checked instead.
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


async def open_source(uri: str, allowed_dir: Path | None, tenant: Tenant) -> BinaryIO:
    """The regular file a `file://` URI names inside `<allowed_dir>/<tenant>/`, opened for
    reading. Resolving, opening and checking happen in a worker thread: a file call can
    block (a FIFO, a slow disk), and the event loop serves every tenant."""
    if allowed_dir is None:
        raise FailedPrecondition(
            "source_uri imports are disabled on this server (IMPORTD_SOURCE_DIR is not set)",
            reason="SOURCE_URI_DISABLED",
        )
    parts = urlsplit(uri)
    if parts.scheme != "file":
        raise InvalidArgument.for_field(
            FIELD, f"scheme {excerpt(parts.scheme)} is not supported; use file://"
        )
    if parts.netloc not in ("", "localhost"):
        raise InvalidArgument.for_field(FIELD, "a file:// URI must name a local path")
    requested = unquote(parts.path)
    if "\x00" in requested:
        raise InvalidArgument.for_field(FIELD, "the path contains a NUL character")
    return await asyncio.to_thread(_open_inside, requested, allowed_dir / tenant)


def _open_inside(requested: str, tenant_dir: Path) -> BinaryIO:
    folder = tenant_dir.resolve()
    path = Path(requested).resolve()
    if not path.is_relative_to(folder):
        raise InvalidArgument.for_field(FIELD, "the path is outside the tenant's folder")
    shown = _shown(path.relative_to(folder))
    try:
        descriptor = os.open(path, OPEN_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        raise InvalidArgument.for_field(FIELD, f"no file at {shown}") from None
    except OSError as error:
        if error.errno == errno.ELOOP:  # the resolved last part became a link meanwhile
            raise InvalidArgument.for_field(FIELD, f"{shown} is not a regular file") from None
        raise InvalidArgument.for_field(FIELD, f"cannot open {shown}: {error.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise InvalidArgument.for_field(FIELD, f"{shown} is not a regular file")
        os.set_blocking(descriptor, True)
        # Where the descriptor really points (Linux): a folder on the way swapped for a
        # link between the resolve and the open cannot lead outside.
        opened = Path(f"/proc/self/fd/{descriptor}")
        if opened.exists() and not opened.resolve().is_relative_to(folder):
            raise InvalidArgument.for_field(FIELD, f"{shown} led outside the tenant's folder")
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _shown(relative: Path) -> str:
    """A path inside the tenant's folder as an error shows it: relative, and cut."""
    text = str(PurePosixPath(relative))
    if text == ".":
        text = "the folder itself"
    return text if len(text) <= SHOWN_PATH_CHARS else text[:SHOWN_PATH_CHARS] + "…"
