"""The knowledge console in a real browser (Playwright driving Debian's Chromium) against
a real `rwkv-rag serve` process: the real MiniLM for retrieval, a scripted chat model so
the answer's citation marker is known. Screenshots of each page go to docs/img/."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MINILM, ROOT, RunningServer, start_server, stop_server
from tests.kb.fixtures import make_pdf
from tests.remote.openai_shaped import OpenAIShaped, Running

CHROMIUM = next(
    (p for p in (os.environ.get("CHROMIUM"), shutil.which("chromium")) if p and Path(p).exists()),
    None,
)
try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the dev extra installs it
    sync_playwright = None  # type: ignore[assignment]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or sync_playwright is None,
    reason="needs Chromium (apt-get install chromium; make test installs it) and playwright",
)
# UPDATE_SCREENSHOTS=1 refreshes the committed screenshots; otherwise they go to a temp dir.
IMG = (
    ROOT / "docs" / "img"
    if os.environ.get("UPDATE_SCREENSHOTS")
    else Path(tempfile.gettempdir()) / "rwkv-rag-console-shots"
)
KEY = "sk-console-test"
ANSWER = "Hold the red button for ten seconds [1]."


def _config(keys: list[str], upstream: str) -> dict[str, Any]:
    return {
        "models": [
            MINILM,
            # A model served by an upstream server (a small OpenAI-shaped one, in this
            # process): the models page shows its upstreams.
            {
                "id": "remote-chat",
                "kind": "chat",
                "engine": "remote",
                "options": {"upstreams": [upstream], "upstream_model": "echo"},
            },
            {
                "id": "scripted-chat",
                "kind": "chat",
                "engine": "fake",
                "options": {"script": [ANSWER]},
            },
        ],
        "api_keys": keys,
        "profiles": [
            {
                "id": "manuals-bot",
                "model": "scripted-chat",
                "vector_store_ids": ["manuals"],
                "top_k": 2,
                "description": "answers from the manuals",
            }
        ],
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with Running(OpenAIShaped()) as upstream:
        srv = start_server(_config([KEY], upstream.url), tmp_path_factory.mktemp("console"))
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
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.errors = errors  # type: ignore[attr-defined]
    yield pg
    context.close()


def _shot(page: Page, name: str) -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMG / f"{name}.png"), full_page=True)


def _no_console_errors(page: Page) -> None:
    # The rejected key's 401 is the one error the browser itself reports.
    errors = [e for e in page.errors if "401" not in e]  # type: ignore[attr-defined]
    assert errors == []


def _sign_in(page: Page, server: RunningServer) -> None:
    page.goto(server.base_url + "/")
    expect(page.get_by_role("heading", name="API key")).to_be_visible()
    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Use key").click()
    expect(page.get_by_role("heading", name="Stores")).to_be_visible()


def test_the_key_prompt_rejects_a_wrong_key_and_accepts_the_right_one(
    page: Page, server: RunningServer
) -> None:
    page.goto(server.base_url + "/")
    assert page.url.endswith("/ui/")
    expect(page.get_by_role("heading", name="API key")).to_be_visible()
    _shot(page, "key")
    page.get_by_label("API key").fill("sk-wrong")
    page.get_by_role("button", name="Use key").click()
    expect(page.get_by_role("alert").filter(has_text="That key was rejected.")).to_be_visible()
    expect(page.get_by_role("heading", name="Stores")).to_have_count(0)
    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Use key").click()
    expect(page.get_by_role("heading", name="Stores")).to_be_visible()
    # The key lives in this tab: a reload keeps it, and the API still needs it.
    page.reload()
    expect(page.get_by_role("heading", name="Stores")).to_be_visible()
    _no_console_errors(page)


def test_a_store_from_upload_to_search_chat_and_deletion(
    page: Page, server: RunningServer, tmp_path: Path
) -> None:
    md = tmp_path / "pump.md"
    md.write_text(
        "# Pump\n\nTo reset the water pump, hold the red button for ten seconds until the "
        "light blinks twice.\n"
    )
    pdf = tmp_path / "billing.pdf"
    pdf.write_bytes(
        make_pdf([["Refunds reach your bank account within five to seven business days."]])
    )
    _sign_in(page, server)
    page.get_by_label("New store name").fill("manuals")
    page.get_by_role("button", name="Create store").click()
    expect(page.get_by_role("heading", name="manuals")).to_be_visible()

    page.get_by_label("choose files").set_input_files([str(md), str(pdf)])
    uploads = page.get_by_role("list", name="Uploads")
    expect(uploads.get_by_role("progressbar", name="pump.md progress")).to_be_visible()
    expect(uploads.get_by_role("progressbar", name="billing.pdf progress")).to_be_visible()
    files = page.locator("#files")
    expect(files.get_by_role("row").filter(has_text="pump.md")).to_contain_text(
        "completed", timeout=60_000
    )
    expect(files.get_by_role("row").filter(has_text="billing.pdf")).to_contain_text(
        "completed", timeout=60_000
    )
    _shot(page, "store")

    page.get_by_role("link", name="billing.pdf").click()
    expect(page.get_by_role("heading", name="Chunks of billing.pdf")).to_be_visible()
    expect(page.get_by_role("article", name="Chunk 1")).to_contain_text("page 1")
    expect(page.get_by_role("article", name="Chunk 1")).to_contain_text("five to seven")
    _shot(page, "chunks")

    page.get_by_role("link", name="Search", exact=True).click()
    page.get_by_label("Query").fill("How do I reset the pump?")
    page.get_by_role("button", name="Search").click()
    first = page.get_by_role("article", name="Result 1")
    expect(first).to_contain_text("pump.md")
    for label in ("score", "dense", "keyword", "fused", "rerank"):
        expect(first).to_contain_text(label)
    _shot(page, "search")

    page.get_by_role("link", name="Chat").click()
    page.get_by_label("Model or profile").select_option("manuals-bot")
    page.get_by_label("Message").fill("How do I reset the pump?")
    page.get_by_role("button", name="Send").click()
    answer = page.get_by_label("Assistant")
    expect(answer).to_contain_text("Hold the red button for ten seconds")
    page.get_by_role("button", name="Copy as curl").click()
    expect(page.locator("#chat-snippet")).to_contain_text("/v1/chat/completions")
    _shot(page, "chat")
    answer.get_by_role("link", name="[1]").click()
    expect(page.get_by_role("heading", name="Chunks of pump.md")).to_be_visible()
    expect(page.locator("article.chunk:focus")).to_contain_text("red button")

    page.get_by_role("link", name="Models").click()
    expect(page.get_by_role("cell", name="minilm", exact=True)).to_be_visible()
    expect(page.get_by_role("cell", name="manuals-bot")).to_be_visible()
    _shot(page, "models")

    page.get_by_role("link", name="Stores").click()
    page.get_by_role("link", name="manuals").click()
    page.get_by_role("button", name="Remove pump.md").click()
    page.get_by_role("dialog").get_by_role("button", name="Remove file").click()
    expect(page.locator("#files")).not_to_contain_text("pump.md")
    expect(page.locator("#files")).to_contain_text("billing.pdf")
    page.get_by_text("Settings", exact=True).click()
    page.get_by_role("button", name="Delete store").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete store").click()
    expect(page.get_by_role("heading", name="Stores")).to_be_visible()
    expect(page.get_by_role("link", name="manuals")).to_have_count(0)
    _no_console_errors(page)


def test_the_console_fits_a_phone_screen(browser: Browser, server: RunningServer) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    try:
        _sign_in(page, server)
        for where in ("#/stores", "#/search", "#/chat", "#/models"):
            page.goto(server.base_url + "/ui/" + where)
            expect(page.locator("main h1")).to_be_visible()
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, (where, overflow)
        # Keyboard: the skip link comes first and moves focus to the content, staying on
        # the page it was on.
        page.goto(server.base_url + "/ui/#/models")
        expect(page.locator("main h1")).to_have_text("Models and health")
        page.keyboard.press("Tab")
        expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.locator("main")).to_be_focused()
        expect(page.locator("main h1")).to_have_text("Models and health")
    finally:
        context.close()


def test_the_models_page_shows_a_remote_models_upstreams(page: Page, server: RunningServer) -> None:
    _sign_in(page, server)
    page.goto(server.base_url + "/ui/#/models")
    remote = page.get_by_role("row").filter(has_text="remote-chat")
    expect(remote).to_contain_text("remote")
    expect(remote).to_contain_text("1/1 upstreams up")
    expect(remote).to_contain_text("/v1 up, 0 in flight")
    expect(remote).to_contain_text("healthy")
    _no_console_errors(page)


def test_web_search_is_offered_disabled_with_its_settings_named_when_no_provider_is_set(
    page: Page, server: RunningServer
) -> None:
    import httpx

    store = httpx.post(
        server.base_url + "/v1/vector_stores",
        json={"name": "web-off"},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=30,
    ).json()
    _sign_in(page, server)
    page.goto(server.base_url + f"/ui/#/stores/{store['id']}")
    expect(page.get_by_role("heading", name="web-off")).to_be_visible()
    expect(page.get_by_label("Web search")).to_be_disabled()
    expect(page.get_by_role("button", name="Search and ingest")).to_be_disabled()
    hint = page.locator("#web-search-off")
    expect(hint).to_contain_text("knowledge.web_search.provider")
    expect(hint).to_contain_text("knowledge.web_search.url")
    expect(page.get_by_label("Web search")).to_have_accessible_description(
        "Web search is off on this gateway. To turn it on, set knowledge.web_search.provider "
        "and knowledge.web_search.url."
    )
    # The rest of the ingest panel still works.
    expect(page.get_by_label("Web page URL")).to_be_enabled()
    _no_console_errors(page)
