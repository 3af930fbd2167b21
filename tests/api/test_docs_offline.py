"""The docs page at /schema needs nothing but this app: no script, style or image it loads
comes from another host, and the app serves every one of them."""

from __future__ import annotations

import zipfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.openapi import SWAGGER_UI_DIR

# What each kind of asset must be served as.
EXPECTED_TYPES = {
    "script": ("text/javascript", "application/javascript"),
    "stylesheet": ("text/css",),
    "icon": ("image/",),
}


class _Assets(HTMLParser):
    """Every URL the page makes a browser load: scripts, stylesheets, icons, images."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = {name: value or "" for name, value in attrs}
        if tag == "script" and named.get("src"):
            self.found.append(("script", named["src"]))
        elif tag == "link" and named.get("href"):
            rel = named.get("rel", "")
            self.found.append(
                ("stylesheet" if "stylesheet" in rel else "icon" if "icon" in rel else rel, named["href"])
            )
        elif tag in ("img", "source") and named.get("src"):
            self.found.append(("icon", named["src"]))


@pytest.mark.parametrize("page", ["/schema", "/schema/swagger"])
async def test_the_docs_page_loads_everything_from_this_app(
    api: AsyncTestClient[Litestar], page: str
) -> None:
    answer = await api.get(page)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    parser = _Assets()
    parser.feed(answer.text)
    kinds = {kind for kind, _ in parser.found}
    assert {"script", "stylesheet", "icon"} <= kinds, parser.found
    base = f"http://testserver.local{page}"
    for kind, url in parser.found:
        absolute = urlsplit(urljoin(base, url))
        assert absolute.netloc == "testserver.local", f"{url} is on another host"
        asset = await api.get(absolute.path)
        assert asset.status_code == 200, url
        assert asset.content, url
        assert asset.headers["content-type"].startswith(EXPECTED_TYPES[kind]), (
            url,
            asset.headers["content-type"],
        )


async def test_the_page_renders_this_apis_document(api: AsyncTestClient[Litestar]) -> None:
    # The page carries the document inline: nothing to fetch for it either.
    page = (await api.get("/schema")).text
    assert "SwaggerUIBundle(" in page
    assert '"title":"Boxoffice"' in page
    document = await api.get("/schema/openapi.json")
    assert document.status_code == 200
    assert document.json()["info"]["title"] == "Boxoffice"


def test_the_bundled_ui_ships_with_its_licence() -> None:
    names = {path.name for path in SWAGGER_UI_DIR.iterdir()}
    assert {"swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css", "LICENSE"} <= names


@pytest.mark.slow
def test_the_wheel_carries_the_docs_assets(tmp_path: Path) -> None:
    """Built as pip builds it: the assets are package data of ``api``."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(root),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("boxoffice-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    for path in SWAGGER_UI_DIR.iterdir():
        assert f"api/static/swagger-ui/{path.name}" in shipped
