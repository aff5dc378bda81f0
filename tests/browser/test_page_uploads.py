"""The page shows a job still receiving its file: its stage, bytes received and rows read,
live, in the jobs list and on the job's page (headless Chromium, a real upload held open)."""

from __future__ import annotations

import grpc
from playwright.async_api import Browser, expect
from rich import filesize

from importd.v1 import import_service_pb2_grpc as pb_grpc
from tests.browser.test_page import SCRIPT_ERRORS, browser, open_page, screenshot  # noqa: F401
from tests.conftest import AppFactory
from tests.integration.test_visible_uploads import BIG, HEADER, HeldUpload, job_when, rows


async def test_a_job_receiving_its_file_shows_its_bytes_and_rows_live(
    make_app: AppFactory,
    browser: Browser,  # noqa: F811 (the fixture)
) -> None:
    app = await make_app(http_port=0, workers=0)
    first, second = HEADER + rows(0, BIG), rows(BIG, BIG)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = pb_grpc.ImportServiceStub(channel)
        upload = HeldUpload(stub, file_name="big-upload.csv")
        upload.send(first)
        job_id = await upload.job_id()
        job = await job_when(stub, job_id, lambda j: j.staged_rows > 0)

        page = await open_page(browser, app)
        row = page.locator("#jobs tbody tr").first
        await expect(row).to_contain_text("Queued · Receiving")
        await expect(row).to_contain_text(
            f"{filesize.decimal(len(first))} received · {job.staged_rows:,} rows read"
        )
        await page.locator(f"a[href='#/jobs/{job_id}']").click()
        await expect(page.locator("#job-stage")).to_have_text("Receiving")
        await screenshot(page, "page-job-receiving")

        upload.send(second)  # the page follows the upload as it goes on
        total = filesize.decimal(len(first) + len(second))
        await expect(page.locator("#job-rate")).to_contain_text(f"{total} received")
        upload.end()
        await upload.call
        await expect(page.locator("#job-status")).to_have_text("Queued")
        await expect(page.locator("#job-stage")).to_have_text("")
        await expect(page.locator("#job-meta")).to_contain_text(total)
    assert SCRIPT_ERRORS[page] == []
