"""The console names the caller's project, and lets an admin work inside one project:
Chromium (Playwright) against a real `rwkv-rag serve` process with two projects."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import FAKE_MODELS, RunningServer, start_server, stop_server
from tests.ui.test_console import CHROMIUM, sync_playwright

if sync_playwright is not None:
    from playwright.sync_api import Browser, Page, expect

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or sync_playwright is None,
    reason="needs Chromium (apt-get install chromium; make test installs it) and playwright",
)
ADMIN, BOB = "sk-console-admin", "sk-console-bob"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    bot = {"model": "scripted-chat", "vector_store_ids": ["docs"]}
    config: dict[str, Any] = {
        "models": [
            *FAKE_MODELS,
            {"id": "scripted-chat", "kind": "chat", "engine": "fake", "options": {}},
        ],
        "auth": {
            "keys": [
                {"key": ADMIN, "project": "ops", "role": "admin"},
                {"key": "sk-console-alice", "project": "team-a"},
                {"key": BOB, "project": "team-b"},
            ]
        },
        "profiles": [
            {"id": "a-bot", "project": "team-a", **bot},
            {"id": "b-bot", "project": "team-b", **bot},
        ],
    }
    srv = start_server(config, tmp_path_factory.mktemp("console-projects"))
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert sync_playwright is not None
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors  # type: ignore[attr-defined]
    yield pg
    context.close()


def _sign_in(page: Page, server: RunningServer, key: str) -> None:
    page.goto(server.base_url + "/ui/#/models")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Use key").click()
    expect(page.get_by_role("heading", name="Models and health")).to_be_visible()


def _access_projects(server: RunningServer, path: str) -> list[str | None]:
    records = [
        json.loads(line) for line in server.log.read_text().splitlines() if line.startswith("{")
    ]
    return [
        r.get("project")
        for r in records
        if r["logger"] == "gateway.access" and r.get("path") == path
    ]


def test_an_admin_switches_project_and_every_call_names_it(
    page: Page, server: RunningServer
) -> None:
    _sign_in(page, server, ADMIN)
    header = page.locator("header")
    expect(header).to_contain_text("All projects (admin)")
    switch = page.get_by_label("Project")
    options = switch.locator("option")
    expect(options).to_have_text(["All projects", "default", "ops", "team-a", "team-b"])
    expect(page.get_by_role("cell", name="a-bot")).to_be_visible()
    expect(page.get_by_role("cell", name="b-bot")).to_be_visible()

    switch.select_option("team-a")
    # The header shows what /v1/me answered: the gateway saw OpenAI-Project: team-a.
    expect(header).to_contain_text("Project: team-a (admin)")
    expect(page.get_by_role("cell", name="a-bot")).to_be_visible()
    expect(page.get_by_role("cell", name="b-bot")).to_have_count(0)
    assert "team-a" in _access_projects(server, "/v1/vector_stores")
    # The chat playground offers that project's profile, and its snippets name the project.
    page.get_by_role("link", name="Chat").click()
    chooser = page.get_by_label("Model or profile")
    expect(chooser.locator("option", has_text="a-bot")).to_have_count(1)
    expect(chooser.locator("option", has_text="b-bot")).to_have_count(0)
    page.get_by_role("button", name="Copy as curl").click()
    expect(page.locator("#chat-snippet")).to_contain_text('-H "OpenAI-Project: team-a"')
    page.get_by_role("link", name="Models").click()

    # The choice lasts for the tab: a reload keeps it.
    page.reload()
    expect(header).to_contain_text("Project: team-a (admin)")
    expect(page.get_by_label("Project")).to_have_value("team-a")
    expect(page.get_by_role("cell", name="b-bot")).to_have_count(0)

    page.get_by_label("Project").select_option("")
    expect(header).to_contain_text("All projects (admin)")
    expect(page.get_by_role("cell", name="b-bot")).to_be_visible()
    assert page.errors == []  # type: ignore[attr-defined]


def test_a_member_sees_its_project_and_no_switcher(page: Page, server: RunningServer) -> None:
    _sign_in(page, server, BOB)
    expect(page.locator("header")).to_contain_text("Project: team-b")
    expect(page.locator("header")).not_to_contain_text("admin")
    expect(page.get_by_label("Project")).to_be_hidden()
    expect(page.get_by_role("cell", name="b-bot")).to_be_visible()
    expect(page.get_by_role("cell", name="a-bot")).to_have_count(0)
    assert page.errors == []  # type: ignore[attr-defined]


def test_one_projects_console_neither_lists_nor_opens_anothers_store(
    page: Page, server: RunningServer
) -> None:
    import httpx

    made = httpx.post(
        f"{server.base_url}/v1/vector_stores",
        json={"name": "alice-manuals"},
        headers={"Authorization": "Bearer sk-console-alice"},
    )
    assert made.status_code == 200, made.text
    alice_store = made.json()["id"]
    _sign_in(page, server, BOB)
    page.get_by_role("link", name="Stores").click()
    expect(page.get_by_role("heading", name="Stores")).to_be_visible()
    expect(page.get_by_role("link", name="alice-manuals")).to_have_count(0)
    # Her store's id typed into the address bar: the API's 404, nothing of hers shown.
    page.goto(f"{server.base_url}/ui/#/stores/{alice_store}")
    expect(page.get_by_role("heading", name="Something went wrong")).to_be_visible()
    expect(page.locator("main")).to_contain_text("no vector store")
    expect(page.locator("main")).not_to_contain_text("alice-manuals")
    # An admin inside team-a finds it in the console.
    page.get_by_role("button", name="Forget key").click()
    _sign_in(page, server, ADMIN)
    page.get_by_label("Project").select_option("team-a")
    page.get_by_role("link", name="Stores").click()
    expect(page.get_by_role("link", name="alice-manuals")).to_be_visible()
    assert page.errors == []  # type: ignore[attr-defined]
