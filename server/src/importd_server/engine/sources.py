"""Files the server reads itself (`source_uri`), confined to one allow-listed folder."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from importd_server.errors import FailedPrecondition, InvalidArgument

FIELD = "spec.source_uri"


def resolve_source_uri(uri: str, allowed_dir: Path | None, tenant: str) -> Path:
    """The file a `file://` URI names, if it lies inside the tenant's folder of `allowed_dir`
    (`<allowed_dir>/<tenant>/`, symlinks resolved): no tenant reads another's files."""
    if allowed_dir is None:
        raise FailedPrecondition(
            "source_uri imports are disabled on this server (IMPORTD_SOURCE_DIR is not set)",
            reason="SOURCE_URI_DISABLED",
        )
    parts = urlsplit(uri)
    if parts.scheme != "file":
        raise InvalidArgument.for_field(
            FIELD, f"scheme {parts.scheme!r} is not supported; use file://"
        )
    if parts.netloc not in ("", "localhost"):
        raise InvalidArgument.for_field(FIELD, "a file:// URI must name a local path")
    root = (allowed_dir / tenant).resolve()
    raw_path = unquote(parts.path)
    if "\x00" in raw_path:
        raise InvalidArgument.for_field(FIELD, "the path contains a NUL character")
    path = Path(raw_path).resolve()
    if not path.is_relative_to(root):
        raise InvalidArgument.for_field(FIELD, f"the path is outside the allowed folder {root}")
    if not path.is_file():
        raise InvalidArgument.for_field(FIELD, f"no file at {path}")
    return path


def open_source(uri: str, allowed_dir: Path | None, tenant: str) -> BinaryIO:
    """The file a `file://` URI names, opened for reading, if it lies inside the tenant's
    folder. The check is repeated on the file actually opened, so a symlink swapped in
    between cannot lead outside."""
    path = resolve_source_uri(uri, allowed_dir, tenant)
    source = path.open("rb")
    opened = Path(f"/proc/self/fd/{source.fileno()}")
    if opened.exists():  # Linux: where the open descriptor really points
        root = (allowed_dir / tenant).resolve() if allowed_dir else path.parent
        if not opened.resolve().is_relative_to(root):
            source.close()
            raise InvalidArgument.for_field(FIELD, "the path left the allowed folder")
    return source
