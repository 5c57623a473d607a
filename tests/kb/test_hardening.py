"""Hostile and careless inputs: bounded memory and time while reading, no silent loss,
SSRF without a time-of-check gap, deep JSON and huge lists refused with a named limit."""

from __future__ import annotations

import asyncio
import io
import json
import random
import socket
import threading
import time
import tracemalloc
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app
from kb.config import UrlFetchSettings
from kb.fetch import FetchError, fetch_url, stored_url
from kb.loaders import LoaderError, LoaderLimits, iter_document
from tests.conftest import asgi_client, fake_settings
from tests.kb.fixtures import make_shared_string_xlsx


def _amplifying_csv(path: Path, rows: int) -> None:
    """The reproduction: one 100 KB header cell, then many short rows."""
    rng = random.Random(1)
    words = " ".join(rng.choice(["alpha", "pump", "valve"]) for _ in range(20000))[:100000]
    path.write_text(f'"a","b","{words}"\n' + "1,2,3\n" * rows)


def _consume(path: Path, name: str, limits: LoaderLimits) -> tuple[int, int, str | None]:
    """(peak traced bytes, sections read, the error's message) of reading a file whole."""
    tracemalloc.start()
    n, error = 0, None
    try:
        for _ in iter_document(path, name, limits):
            n += 1
    except LoaderError as exc:
        error = exc.message
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, n, error


def test_csv_header_amplification_stays_within_the_budget(tmp_path: Path) -> None:
    path = tmp_path / "amp.csv"
    _amplifying_csv(path, 35_000)
    budget = 1_000_000
    peak, _, error = _consume(path, "amp.csv", LoaderLimits(max_extracted_chars=budget))
    assert error is not None and "knowledge.max_extracted_chars" in error
    assert peak < 2 * budget, peak
    # Within the budget the repeated header is cut, not copied whole into every record.
    small = tmp_path / "small.csv"
    _amplifying_csv(small, 50)
    [first, *_] = iter_document(small, "small.csv", LoaderLimits())
    assert len(first.text) < 300 and "a: 1; b: 2" in first.text


def test_xlsx_shared_string_amplification_stays_within_the_budget(tmp_path: Path) -> None:
    path = tmp_path / "amp.xlsx"
    # One 18 KB shared string referenced by every one of 2,000 rows: a 20 KB file.
    path.write_bytes(make_shared_string_xlsx(2000, "valve " * 3000))
    assert path.stat().st_size < 40_000
    budget = 1_000_000
    peak, _, error = _consume(path, "amp.xlsx", LoaderLimits(max_extracted_chars=budget))
    assert error is not None and "knowledge.max_extracted_chars" in error
    assert peak < 2 * budget + 2_000_000, peak  # openpyxl keeps its shared-string table


def test_a_wide_csv_fails_fast_naming_the_cell_limit(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_text(",".join(f"c{i}" for i in range(200_000)) + "\n" + "1," * 200_000 + "\n")
    started = time.perf_counter()
    peak, _, error = _consume(path, "wide.csv", LoaderLimits())
    assert error is not None and "knowledge.max_cells_per_row" in error
    assert time.perf_counter() - started < 30 and peak < 200_000_000


def test_an_over_long_csv_field_and_a_one_line_csv_are_named_input_errors(tmp_path: Path) -> None:
    path = tmp_path / "field.csv"
    path.write_text('a,b\n"' + "x" * 200_000 + '",1\n')
    _, _, error = _consume(path, "field.csv", LoaderLimits())
    assert error is not None and "knowledge.max_cell_chars" in error
    line = tmp_path / "line.csv"
    line.write_text("y" * 2_000_000)
    _, n, error = _consume(line, "line.csv", LoaderLimits())
    assert n == 0 and error is not None


def test_a_malformed_shared_string_is_an_input_error(tmp_path: Path) -> None:
    good = tmp_path / "good.xlsx"
    good.write_bytes(make_shared_string_xlsx(3, "fine"))
    assert [s.text for s in iter_document(good, "good.xlsx", LoaderLimits())] == ["note: fine"] * 3
    bad = tmp_path / "bad.xlsx"
    bad.write_bytes(make_shared_string_xlsx(3, "fine", index=999))
    _, _, error = _consume(bad, "bad.xlsx", LoaderLimits())
    assert error is not None and "malformed" in error


def test_text_in_utf16_with_a_bom_is_read(tmp_path: Path) -> None:
    path = tmp_path / "u16.txt"
    path.write_bytes("Die Pumpe startet neu. 水泵重启。".encode("utf-16"))
    [section] = list(iter_document(path, "u16.txt", LoaderLimits()))
    assert "Pumpe" in section.text and "水泵" in section.text


def test_deep_html_keeps_its_text(tmp_path: Path) -> None:
    path = tmp_path / "deep.html"
    path.write_text(
        "<html><body><p>Sibling text before.</p>"
        + "<div>" * 300
        + "Deep text inside."
        + "</div>" * 300
        + "<p>Sibling text after.</p></body></html>"
    )
    text = " ".join(s.text for s in iter_document(path, "deep.html", LoaderLimits()))
    assert "Sibling text before." in text and "Deep text inside." in text
    assert "Sibling text after." in text


def test_a_long_single_sentence_is_chunked_quickly() -> None:
    from engines.base import ModelInfo
    from engines.fake import FakeEmbedder
    from kb.chunking import ChunkingStrategy, chunk_text

    tok = FakeEmbedder(ModelInfo("f", "embedding", "fake"), {}).tokenizer
    text = "word " * 200_000  # 1 MB, no sentence end
    started = time.perf_counter()
    chunks = chunk_text(text, ChunkingStrategy(200, 0), tok.count)
    assert time.perf_counter() - started < 10
    assert len(chunks) == 1000 and all(c.token_count <= 200 for c in chunks)


# -- through the API ---------------------------------------------------------------------


async def _attach(http: httpx.AsyncClient, vs: str, name: str, data: bytes) -> str:
    fid = (
        await http.post("/v1/files", files={"file": (name, data)}, data={"purpose": "assistants"})
    ).json()["id"]
    r = await http.post(f"/v1/vector_stores/{vs}/files", json={"file_id": fid})
    assert r.status_code == 200, r.text
    return str(fid)


async def _status(http: httpx.AsyncClient, vs: str, fid: str) -> dict[str, Any]:
    return dict((await http.get(f"/v1/vector_stores/{vs}/files/{fid}")).json())


async def _done(http: httpx.AsyncClient, vs: str, fid: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = await _status(http, vs, fid)
        if row["status"] != "in_progress":
            return row
        await asyncio.sleep(0.02)
    raise AssertionError(f"{fid} still in progress")


async def test_bad_files_fail_with_a_reason_and_never_pass_as_empty(tmp_path: Path) -> None:
    settings = fake_settings(data_dir=str(tmp_path), knowledge={"max_extracted_chars": 100_000})
    async with asgi_client(create_app(settings)) as http:
        vs = (await http.post("/v1/vector_stores", json={"name": "h"})).json()["id"]
        ok = await _attach(http, vs, "ok.txt", b"The pump works fine.")
        amp = tmp_path / "amp.csv"
        _amplifying_csv(amp, 35_000)
        cases = {
            "amp.csv": (amp.read_bytes(), "knowledge.max_extracted_chars"),
            "empty.txt": (b"   \n\n  ", "no text"),
            "blank.html": (b"<html><body><script>x()</script></body></html>", "no text"),
            "tool.exe": (b"just text in an exe", ".exe"),
            "letter.docx": (_docx_zip(), "the Word document could not be read"),
            "letter.odt": (_odt_zip(), ".odt"),
        }
        ids = {name: await _attach(http, vs, name, data) for name, (data, _) in cases.items()}
        for name, (_, reason) in cases.items():
            row = await _done(http, vs, ids[name])
            assert row["status"] == "failed", (name, row)
            assert reason in row["last_error"]["message"], (name, row)
        assert (await _done(http, vs, ok))["status"] == "completed"
        info = (await http.get(f"/v1/vector_stores/{vs}")).json()
        # What failed left nothing behind; what was stored before is intact.
        assert info["file_counts"]["completed"] == 1 and info["chunk_count"] == 1


def _odt_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("content.xml", "<office:document-content/>")
    return out.getvalue()


def _docx_zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("word/document.xml", "<w:document/>")
    return out.getvalue()


async def test_a_small_file_is_not_kept_waiting_behind_a_slow_one(tmp_path: Path) -> None:
    models = [
        {"id": "fake-embed", "kind": "embedding", "engine": "fake", "options": {"delay_ms": 50}}
    ]
    settings = fake_settings(
        models=models,
        data_dir=str(tmp_path),
        knowledge={"embed_batch_size": 4, "ingest_workers": 2},
    )
    async with asgi_client(create_app(settings)) as http:
        vs = (await http.post("/v1/vector_stores", json={"name": "q"})).json()["id"]
        slow_text = "\n\n".join(f"Paragraph {i}. " + "word " * 300 for i in range(200))
        slow = await _attach(http, vs, "slow.txt", slow_text.encode())
        small = await _attach(http, vs, "small.txt", b"A short note.")
        assert (await _done(http, vs, small))["status"] == "completed"
        assert (await _status(http, vs, slow))["status"] == "in_progress"


async def test_repeated_and_too_many_store_ids_are_deduplicated_then_capped(
    tmp_path: Path,
) -> None:
    async with asgi_client(create_app(fake_settings(data_dir=str(tmp_path)))) as http:
        vs = (await http.post("/v1/vector_stores", json={"name": "k"})).json()["id"]
        await _done(http, vs, await _attach(http, vs, "a.txt", b"Refunds take five days."))
        from tests.conftest import FAKE_MODELS

        del FAKE_MODELS
        r = await http.post(f"/v1/vector_stores/{vs}/search", json={"query": ["refunds"] * 20_000})
        assert r.status_code == 400 and r.json()["error"]["param"] == "query"
        r = await http.post(f"/v1/vector_stores/{vs}/search", json={"query": ["refunds"] * 17})
        assert r.status_code == 400 and r.json()["error"]["code"] == "too_many_queries"


async def test_deep_json_is_a_400_naming_the_limit(client: Any) -> None:
    for path in ("/v1/embeddings", "/v1/chat/completions", "/v1/vector_stores", "/mcp"):
        r = await client.post(
            path, content=b"[" * 100_000, headers={"content-type": "application/json"}
        )
        assert r.status_code == 400, (path, r.text)
        assert r.json()["error"]["code"] == "json_too_deep"
    r = await client.post("/v1/embeddings", content=b'{"model": "fake-embed", "input": "x"}')
    assert r.status_code == 200


async def test_deep_and_broad_filters_are_refused(tmp_path: Path) -> None:
    async with asgi_client(create_app(fake_settings(data_dir=str(tmp_path)))) as http:
        vs = (await http.post("/v1/vector_stores", json={"name": "f"})).json()["id"]
        leaf: dict[str, Any] = {"type": "eq", "key": "a", "value": 1}
        deep = leaf
        for _ in range(20):
            deep = {"type": "and", "filters": [deep]}
        r = await http.post(f"/v1/vector_stores/{vs}/search", json={"query": "x", "filters": deep})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_filter"
        broad = {"type": "or", "filters": [leaf] * 500}
        r = await http.post(f"/v1/vector_stores/{vs}/search", json={"query": "x", "filters": broad})
        assert r.status_code == 400 and r.json()["error"]["param"] == "filters"
        deeper = '{"type": "and", "filters": [' * 500 + json.dumps(leaf) + "]}" * 500
        r = await http.post(
            f"/v1/vector_stores/{vs}/search",
            content='{"query": "x", "filters": ' + deeper + "}",
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "json_too_deep"


# -- URLs ----------------------------------------------------------------------------------


class _Counting(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        body = b"<html><body><p>internal secret page</p></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def listener() -> Iterator[int]:
    _Counting.hits = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


async def test_dns_rebinding_never_reaches_the_internal_service(
    listener: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = socket.getaddrinfo
    answers = iter(["93.184.215.14"])

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "rebind.test":
            # The first answer is public; every later one points at the loopback service.
            ip = next(answers, "127.0.0.1")
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with pytest.raises(FetchError):
        await fetch_url(f"http://rebind.test:{listener}/", UrlFetchSettings(timeout_s=1))
    assert _Counting.hits == 0


async def test_credentials_malformed_urls_and_bad_attributes_are_400_before_any_fetch(
    listener: int, tmp_path: Path
) -> None:
    settings = fake_settings(
        data_dir=str(tmp_path), knowledge={"url": {"allow_private_networks": True}}
    )
    async with asgi_client(create_app(settings)) as http:
        vs = (await http.post("/v1/vector_stores", json={"name": "u"})).json()["id"]
        for url in (
            f"http://user:pw@127.0.0.1:{listener}/",
            "http://127.0.0.1:+8199/",
            "http://127.0.0.1:99999/",
            "http://[::1/",
        ):
            r = await http.post(f"/v1/vector_stores/{vs}/urls", json={"url": url})
            assert r.status_code == 400, (url, r.text)
            assert r.json()["error"]["code"] == "invalid_url" and "pw" not in r.text
        r = await http.post(
            f"/v1/vector_stores/{vs}/urls",
            json={"url": f"http://127.0.0.1:{listener}/", "attributes": {"a": [1]}},
        )
        assert r.status_code == 400 and r.json()["error"]["param"] == "attributes"
        assert _Counting.hits == 0
        r = await http.post(
            f"/v1/vector_stores/{vs}/urls",
            json={"url": f"http://127.0.0.1:{listener}/page?id=7&token=s3cret"},
        )
        assert r.status_code == 200, r.text
        # The page is fetched by the job the answer started.
        for _ in range(400):
            row = (await http.get(f"/v1/vector_stores/{vs}/files/{r.json()['id']}")).json()
            if row["status"] != "in_progress":
                break
            await asyncio.sleep(0.05)
        assert _Counting.hits == 1
        assert r.json()["attributes"]["url"] == f"http://127.0.0.1:{listener}/page?id=7"
        assert "s3cret" not in json.dumps(r.json())


def test_stored_urls_drop_secrets_but_keep_the_page() -> None:
    assert stored_url("https://h.example/a?x=1&api_key=k&X-Amz-Signature=s") == (
        "https://h.example/a?x=1"
    )


async def test_a_file_name_with_control_characters_is_stored_clean_and_downloads() -> None:
    from gateway.app import create_app
    from tests.conftest import asgi_client, fake_settings

    async with asgi_client(create_app(fake_settings())) as http:
        name = "report\r\nX-Injected: 1\u202e.txt"
        up = await http.post(
            "/v1/files",
            files={"file": (name, b"hello")},
            data={"purpose": "assistants"},
        )
        assert up.status_code == 200, up.text
        stored = up.json()["filename"]
        assert stored == "report X-Injected: 1.txt"
        got = await http.get(f"/v1/files/{up.json()['id']}/content")
        assert got.status_code == 200 and got.content == b"hello"
        assert "x-injected" not in {k.lower() for k in got.headers}
        listed = (await http.get("/v1/files")).json()["data"]
        assert [f["filename"] for f in listed] == [stored]


async def test_metadata_is_bounded_as_the_openai_api_bounds_it() -> None:
    from gateway.app import create_app
    from tests.conftest import asgi_client, fake_settings

    async with asgi_client(create_app(fake_settings())) as http:
        too_many = {f"k{i}": "v" for i in range(17)}
        for metadata in (too_many, {"k" * 65: "v"}, {"k": "v" * 513}):
            r = await http.post(
                "/v1/responses", json={"model": "x", "input": "hi", "metadata": metadata}
            )
            assert r.status_code == 400, r.text
            assert r.json()["error"]["type"] == "invalid_request_error"
            r = await http.post("/v1/vector_stores", json={"name": "bounded", "metadata": metadata})
            assert r.status_code == 400, r.text
