"""source_uri files: only regular files inside the tenant's folder open; every refusal is
INVALID_ARGUMENT on spec.source_uri in words relative to that folder, and none blocks."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from importd_server.engine.sources import open_source
from importd_server.errors import FailedPrecondition, InvalidArgument
from importd_server.tenants import Tenant

ACME = Tenant("acme")


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`<root>/sources` with acme's folder of files, links, a FIFO, and others' files."""
    root = tmp_path_factory.mktemp("server")
    (root / "secret.txt").write_text("the server's\n")
    sources = root / "sources"
    (sources / "globex").mkdir(parents=True)
    (sources / "globex" / "secret.csv").write_text("email\nglobex@x.com\n")
    acme = sources / "acme"
    (acme / "reports" / "dir").mkdir(parents=True)
    (acme / "reports" / "x.csv").write_text("email\na@x.com\n")
    os.mkfifo(acme / "fifo")
    links = {
        "link-in": "reports/x.csv",
        "link-out": "../globex/secret.csv",
        "link-up": "../..",
        "link-fifo": "fifo",
        "dangling": "nowhere.csv",
    }
    for name, target in links.items():
        (acme / name).symlink_to(target)
    return sources


def open_in(sources: Path, path: str) -> bytes:
    """The bytes `open_source` gives for `<acme's folder>/<path>` as a file:// URI."""

    async def read() -> bytes:
        uri = "file://" + quote(f"{sources / 'acme'}/{path}")
        with await open_source(uri, sources, ACME) as source:
            return source.read()

    return asyncio.run(read())


SEGMENTS = ["reports", "x.csv", "dir", "..", ".", "missing.csv", "globex", "secret.csv"]
NAMES = ["fifo", "link-in", "link-out", "link-up", "link-fifo", "dangling", "secret.txt"]
relative_paths = st.lists(st.sampled_from(SEGMENTS + NAMES), min_size=1, max_size=5).map("/".join)


@settings(deadline=None)  # no timing: the machine may be busy
@given(relative_paths)
def test_only_regular_files_inside_the_folder_open_and_refusals_name_no_server_folder(
    sources: Path, path: str
) -> None:
    acme = (sources / "acme").resolve()
    real = Path(os.path.realpath(acme / path))
    if real.is_relative_to(acme) and real.is_file():
        assert open_in(sources, path) == real.read_bytes()
        return
    with pytest.raises(InvalidArgument) as refused:
        open_in(sources, path)
    (violation,) = refused.value.field_violations
    assert violation.field == "spec.source_uri"
    assert str(sources.parent) not in refused.value.message
    if not real.is_relative_to(acme):
        assert violation.description == "the path is outside the tenant's folder"
        return
    shown = "the folder itself" if real == acme else str(real.relative_to(acme))
    if not real.exists():
        assert violation.description == f"no file at {shown}"
    else:
        assert violation.description == f"{shown} is not a regular file"


@pytest.mark.parametrize(
    ("path", "description"),
    [
        ("reports/missing.csv", "no file at reports/missing.csv"),
        ("reports/../../globex/secret.csv", "the path is outside the tenant's folder"),
        ("link-out", "the path is outside the tenant's folder"),
        ("fifo", "fifo is not a regular file"),
        ("link-fifo", "fifo is not a regular file"),
        ("reports/dir", "reports/dir is not a regular file"),
        ("dangling", "no file at nowhere.csv"),
        ("reports/" + "a/" * 150, "no file at reports/" + "a/" * 96 + "…"),
    ],
    ids=["missing", "traversal", "link-out", "fifo", "link-to-fifo", "folder", "dangling", "long"],
)
def test_refusals_speak_in_paths_relative_to_the_tenant_folder(
    sources: Path, path: str, description: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        open_in(sources, path)
    assert refused.value.message == f"spec.source_uri: {description}"


def test_a_link_inside_the_folder_to_a_file_inside_it_opens(sources: Path) -> None:
    assert open_in(sources, "link-in") == b"email\na@x.com\n"


def test_source_uri_is_off_without_a_source_folder() -> None:
    with pytest.raises(FailedPrecondition) as refused:
        asyncio.run(open_source("file:///etc/passwd", None, ACME))
    assert refused.value.reason == "SOURCE_URI_DISABLED"
