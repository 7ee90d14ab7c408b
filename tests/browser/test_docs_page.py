"""The API docs page (/docs) works in a real browser with no internet: it renders every
route, and a person can authorize with a key and call the API from it."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, Request, expect, sync_playwright

from tests.browser.conftest import CHROMIUM_ARGS, RunningServer

pytestmark = pytest.mark.browser


def _open_docs(page: Page, server: RunningServer, outside: list[str]) -> None:
    def remember(request: Request) -> None:
        if not request.url.startswith(server.base_url):
            outside.append(request.url)

    page.on("request", remember)
    page.goto(f"{server.base_url}/docs")


def test_docs_render_and_call_the_api(chromium_path: str, server: RunningServer) -> None:
    outside: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            _open_docs(page, server, outside)

            expect(page.get_by_role("heading", name="Switchyard")).to_be_visible()
            for path in ("/hooks/{connection_id}", "/v1/jobs", "/v1/connections"):
                expect(page.locator(".opblock-summary-path", has_text=path).first).to_be_visible()

            # Authorize with the admin key, then call GET /v1/jobs from the page.
            page.get_by_role("button", name="Authorize").first.click()
            modal = page.locator(".modal-ux")
            modal.get_by_role("textbox", name="auth-bearer-value").fill(server.admin_key)
            modal.get_by_role("button", name="Apply credentials").first.click()
            modal.get_by_role("button", name="Close").first.click()

            jobs = page.locator(".opblock-get", has_text="/v1/jobs").filter(has_not_text="{job_id}")
            jobs.locator(".opblock-summary").first.click()
            jobs.get_by_role("button", name="Try it out").click()
            jobs.get_by_role("button", name="Execute").click()
            status = jobs.locator(".live-responses-table tr.response .response-col_status").first
            expect(status).to_have_text("200")
            expect(jobs.locator(".live-responses-table")).to_contain_text('"data"')
        finally:
            browser.close()
    assert outside == []  # every asset came from the server itself


def test_docs_without_a_key_show_the_problem(chromium_path: str, server: RunningServer) -> None:
    outside: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            _open_docs(page, server, outside)
            jobs = page.locator(".opblock-get", has_text="/v1/jobs").filter(has_not_text="{job_id}")
            jobs.locator(".opblock-summary").first.click()
            jobs.get_by_role("button", name="Try it out").click()
            jobs.get_by_role("button", name="Execute").click()
            table = jobs.locator(".live-responses-table")
            status = table.locator("tr.response .response-col_status").first
            expect(status).to_have_text(re.compile(r"^401"))
            expect(table).to_contain_text("/problems/unauthenticated")
        finally:
            browser.close()
    assert outside == []
