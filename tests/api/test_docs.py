"""/docs and /redoc work offline: every asset they load is served by the API itself."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_every_asset_from_the_api_itself(client: TestClient, page: str) -> None:
    html = client.get(page).text
    assets = re.findall(r"""(?:src|href)\s*=\s*['"]([^'"]+)['"]|url:\s*'([^']+)'""", html)
    urls = [src or url for src, url in assets]

    assert urls, html
    assert "http://" not in html and "https://" not in html, html
    assert any(u.endswith(".js") for u in urls), urls
    for url in urls:
        assert not urlsplit(url).netloc, url
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.content, url
    assert client.get("/openapi.json").json()["info"]["title"] == "Tracker API"
