"""importctl with the shapes people have: a workbook's sheet and a column map from the
command line, and how the file was read in the job it shows."""

from __future__ import annotations

from pathlib import Path

from importd_server.app import Application
from tests.acceptance.test_importctl import importctl
from tests.spreadsheets import xlsx


async def test_a_workbook_sheet_and_a_column_map_from_the_command_line(
    app: Application, tmp_path: Path
) -> None:
    book = tmp_path / "leads.xlsx"
    book.write_bytes(
        xlsx(
            {
                "Summary": [["total", 2]],
                "Leads": [["E-Mail Address", "Given"], ["a@x.com", "Ann"], ["b@x.com", "Bob"]],
            }
        )
    )
    code, stdout, stderr = await importctl(
        app,
        "start",
        str(book),
        "-t",
        "contacts",
        "--sheet",
        "leads",
        "--map",
        "E-Mail Address=email",
        "--map",
        "Given=first_name",
        "--watch",
    )
    assert code == 0, stderr
    assert "created    2" in stdout
    assert "XLSX, sheet 'Leads' (detected: format)" in stdout


async def test_a_map_without_a_column_is_a_usage_error(app: Application, tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(b"email\na@x.com\n")
    code, _, stderr = await importctl(
        app, "start", str(tmp_path / "a.csv"), "-t", "contacts", "--map", "E-Mail"
    )
    assert code == 2
    assert "--map 'E-Mail' must be 'file header=column'" in stderr
