"""The page in a real browser: Debian's headless Chromium driven by Playwright, against a
real server and database. Screenshots go to IMPORTD_SCREENSHOTS_DIR when it is set
(`IMPORTD_SCREENSHOTS_DIR=docs uv run pytest tests/browser -n 1` refreshes the README's)."""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from importd_server.app import Application
from tests.conftest import AppFactory

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
LAPTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
TOKENS = """
[[tokens]]
token = "acme-live"
tenant = "acme"
live = true

[[tokens]]
token = "acme-test"
tenant = "acme"
live = false
"""
# Every seventh row has a bad e-mail address.
ROWS = 300
FILE = "email,first_name\n" + "".join(
    f"bad-{i},B{i}\n" if i % 7 == 0 else f"user{i}@example.com,U{i}\n" for i in range(ROWS)
)
BAD_ROWS = len(range(0, ROWS, 7))

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and not os.environ.get("CI"),
    reason="chromium is not installed (apt-get install chromium); CI always runs these",
)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        await browser.close()


@pytest.fixture
def upload(tmp_path: Path) -> Path:
    path = tmp_path / "march-contacts.csv"
    path.write_text(FILE)
    return path


# Script errors of each page opened, by page.
SCRIPT_ERRORS: dict[Page, list[str]] = {}


async def open_page(browser: Browser, app: Application, viewport: Any = LAPTOP) -> Page:
    """The page of the app's HTTP port in a fresh browser context."""
    context = await browser.new_context(viewport=viewport, accept_downloads=True)
    page = await context.new_page()
    errors = SCRIPT_ERRORS.setdefault(page, [])
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"http://127.0.0.1:{app.http_port}/")
    return page


async def screenshot(page: Page, name: str) -> None:
    folder = os.environ.get("IMPORTD_SCREENSHOTS_DIR")
    if folder:
        await page.screenshot(path=str(Path(folder) / f"{name}.png"))


async def watch_bar(page: Page) -> None:
    """Records every value the job page's progress bar takes, in window.barValues."""
    await page.evaluate(
        """() => {
            window.barValues = [];
            const bar = document.getElementById("job-bar");
            new MutationObserver(() => window.barValues.push(Number(bar.value)))
                .observe(bar, {attributes: true, attributeFilter: ["value"]});
        }"""
    )


async def test_a_dropped_file_starts_an_import_whose_bar_moves_to_the_end(
    make_app: AppFactory, browser: Browser
) -> None:
    app = await make_app(http_port=0, workers=1, chunk_size=10)
    page = await open_page(browser, app)
    await expect(page.locator("#import-type")).to_have_value("contacts")
    await watch_bar(page)
    # A drop as the browser makes it: a DataTransfer holding a File.
    await page.evaluate(
        """(text) => {
            const data = new DataTransfer();
            data.items.add(new File([text], "march-contacts.csv", {type: "text/csv"}));
            const drop = document.getElementById("drop");
            drop.dispatchEvent(new DragEvent("dragover", {dataTransfer: data, bubbles: true}));
            drop.dispatchEvent(new DragEvent("drop", {dataTransfer: data, bubbles: true}));
        }""",
        FILE,
    )
    await expect(page.locator("#job-status")).to_have_text("Partially succeeded", timeout=30_000)
    await expect(page.locator("#job-percent")).to_have_text("100%")
    values = await page.evaluate("window.barValues")
    assert values[-1] == 100 and values == sorted(values) and len(set(values)) >= 2, values
    await expect(page.locator("#job-title")).to_have_text("march-contacts.csv")
    counts = page.locator("#counts")
    await expect(counts.locator("div", has_text="Failed")).to_contain_text(str(BAD_ROWS))
    await expect(counts.locator("div", has_text="Created")).to_contain_text(str(ROWS - BAD_ROWS))
    summary = page.locator("#error-summary tbody tr")
    await expect(summary).to_have_count(1)
    await expect(summary).to_have_text(f"INVALID_EMAILemail{BAD_ROWS}")
    await screenshot(page, "page-job")
    assert SCRIPT_ERRORS[page] == []


async def test_the_failed_rows_show_their_errors_and_filter_by_error_code(
    make_app: AppFactory, browser: Browser, upload: Path
) -> None:
    app = await make_app(http_port=0)
    page = await open_page(browser, app)
    await page.set_input_files("#file", upload)
    # By keyboard: the form's button is a real button.
    await page.locator("#start").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#job-status")).to_have_text("Partially succeeded", timeout=30_000)
    await expect(page.locator("#entries-total")).to_have_text(f"{BAD_ROWS} rows match.")
    first = page.locator("#entries tbody tr").first
    await expect(first).to_contain_text("INVALID_EMAIL")
    await expect(first).to_contain_text('"bad-0"')
    await page.locator("#error-code").fill("REQUIRED")
    await page.locator("#error-code").press("Enter")
    await expect(page.locator("#entries-total")).to_have_text("0 rows match.")
    await page.locator("#error-code").fill("INVALID_EMAIL")
    await page.locator("#error-code").press("Enter")
    await expect(page.locator("#entries-total")).to_have_text(f"{BAD_ROWS} rows match.")
    await expect(page.locator("#entries tbody tr")).to_have_count(min(BAD_ROWS, 50))
    await page.set_viewport_size(PHONE)
    await screenshot(page, "page-job-phone")


async def test_the_not_imported_rows_download_as_csv(
    make_app: AppFactory, browser: Browser, upload: Path, tmp_path: Path
) -> None:
    app = await make_app(http_port=0)
    page = await open_page(browser, app)
    await page.set_input_files("#file", upload)
    await page.locator("#start").click()
    await expect(page.locator("#job-status")).to_have_text("Partially succeeded", timeout=30_000)
    async with page.expect_download() as waiting:
        await page.locator("#download").click()
    download = await waiting.value
    saved = tmp_path / "saved.csv"
    await download.save_as(saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_text())))
    assert download.suggested_filename == "march-contacts.not-imported.csv"
    assert [r["email"] for r in rows] == [f"bad-{i}" for i in range(0, ROWS, 7)]
    assert {r["importd_status"] for r in rows} == {"FAILED"}
    await expect(page.locator("#link")).to_contain_text("can download these rows until")

    # The whole file as one report: every row in file order, each with its status.
    async with page.expect_download() as waiting:
        await page.locator("#download-all").click()
    everything = await waiting.value
    await everything.save_as(saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_text())))
    assert everything.suggested_filename == "march-contacts.all-rows.csv"
    assert [int(r["importd_row"]) for r in rows] == list(range(1, ROWS + 1))
    assert {r["importd_status"] for r in rows} == {"CREATED", "FAILED"}


async def test_a_running_job_is_cancelled_from_its_page(
    make_app: AppFactory, browser: Browser, db: asyncpg.Connection
) -> None:
    app = await make_app(http_port=0, workers=0)  # no worker: the job waits where it is put
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{app.http_port}/v1/jobs:import?spec.importType=contacts"
        async with session.post(url, data=FILE.encode()) as response:
            job = await response.json()
    # Running, as when a worker is half-way through it.
    await db.execute(
        "UPDATE import_jobs SET status = 'RUNNING', stage = 'PROCESSING', start_time = now()"
        " WHERE id = $1",
        job["id"],
    )
    page = await open_page(browser, app)
    await page.locator(f"a[href='#/jobs/{job['id']}']").click()
    await expect(page.locator("#job-status")).to_have_text("Running")
    await page.locator("#cancel").press("Enter")
    await expect(page.locator("#confirm-cancel-yes")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.locator("#job-status")).to_have_text("Cancelled")
    await expect(page.locator("#cancel")).to_be_hidden()
    status = await db.fetchval("SELECT status FROM import_jobs WHERE id = $1", job["id"])
    assert status == "CANCELLED"


async def test_a_test_token_signs_in_and_sees_only_test_jobs(
    make_app: AppFactory, browser: Browser, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text(TOKENS)
    app = await make_app(http_port=0, auth_static_tokens=tokens)
    base = f"http://127.0.0.1:{app.http_port}/v1/jobs:import?spec.importType=contacts"
    async with aiohttp.ClientSession() as session:
        for token, name, dry_run in (
            ("acme-live", "live.csv", "false"),
            ("acme-test", "test.csv", "true"),
        ):
            async with session.post(
                f"{base}&spec.fileName={name}&spec.dryRun={dry_run}",
                data=FILE.encode(),
                headers={"Authorization": f"Bearer {token}"},
            ) as response:
                assert response.status == 200, await response.text()
    page = await open_page(browser, app)
    await expect(page.locator("#sign-in-view")).to_be_visible()
    await expect(page.locator("#token")).to_be_focused()
    await screenshot(page, "page-sign-in")
    await page.keyboard.type("acme-test")
    await page.keyboard.press("Enter")
    files = page.locator("#jobs tbody tr td:first-child a")
    await expect(files).to_have_text(["test.csv"])
    await page.locator("#sign-out").click()
    await page.locator("#token").fill("acme-live")
    await page.locator("#token").press("Enter")
    await expect(files).to_have_text(["test.csv", "live.csv"])
    await expect(page.locator("#jobs tbody tr").first).to_contain_text("dry run")
    await screenshot(page, "page-jobs")
    await page.set_viewport_size(PHONE)
    await screenshot(page, "page-jobs-phone")
    assert SCRIPT_ERRORS[page] == []
