"""The documentation site: it builds with ``mkdocs build --strict`` (every gallery script
executed, no broken link or reference), every public name has an API entry, and in headless
Chromium every page loads without a console error, a broken image or an empty body, and the
search box finds things. Screenshots of the home page and a gallery page are saved under
``site/screenshots/``."""

from __future__ import annotations

import functools
import http.server
import importlib
import inspect
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "site"
EXAMPLES = sorted(p.stem for p in (ROOT / "examples").glob("plot_*.py"))
#: the modules with an API page, and the page
API_PAGES = {
    "realnvp.models": "models",
    "realnvp.bijections": "bijections",
    "realnvp.training": "training",
    "realnvp.data": "data",
    "realnvp.estimator": "estimator",
    "realnvp.distributions": "nn",
    "realnvp.nn": "nn",
    "realnvp.sbi": "sbi",
}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: the flags a closed network needs: without them Chromium keeps dialling Google's hosts
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def site() -> Path:
    """The site, built from scratch (every build reruns every example; the gallery's earlier
    output is removed first, so that no page of a removed example lingers)."""
    shutil.rmtree(ROOT / "docs" / "gallery", ignore_errors=True)
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return SITE


def pages(site: Path) -> list[str]:
    """Every page of the site, as a path from its root ('' for the home page)."""
    found = [p.parent.relative_to(site).as_posix() for p in site.rglob("index.html")]
    return sorted("" if p == "." else p + "/" for p in found)


def test_the_site_has_every_page(site: Path) -> None:
    built = set(pages(site))
    for example in EXAMPLES:
        assert f"gallery/{example}/" in built, example
    for page in ("", "cli/", "design/", "benchmarks/", "changelog/", "api/"):
        assert page in built
    assert {f"api/{p}/" for p in API_PAGES.values()} <= built


def test_each_gallery_page_shows_code_output_and_figures(site: Path) -> None:
    for example in EXAMPLES:
        html = (site / "gallery" / example / "index.html").read_text()
        assert 'class="highlight"' in html and 'class="mkd-glr-script-out"' in html, example
    html_of = {e: (site / "gallery" / e / "index.html").read_text() for e in EXAMPLES}
    figures = [e for e, html in html_of.items() if "mkd-glr-single-img" in html]
    assert len(figures) >= len(EXAMPLES) - 1  # all but at most one draw a figure


def test_the_cli_page_holds_every_commands_help(site: Path) -> None:
    from realnvp.cli.parser import build_parser

    html = (site / "cli" / "index.html").read_text()
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    for name in commands:
        assert f"realnvp {name}" in html and f"usage: realnvp {name}" in html, name


def public_names(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            n
            for n, v in vars(module).items()
            if not n.startswith("_") and getattr(v, "__module__", None) == module_name
        ]
    # classes and functions; constants (KINDS, TOY_DATASETS) are described where they are used
    return [n for n in names if inspect.isclass(v := getattr(module, n)) or inspect.isfunction(v)]


@pytest.mark.parametrize("module_name", sorted(API_PAGES))
def test_every_public_name_is_documented(site: Path, module_name: str) -> None:
    """Each public name has a docstring and an entry (its anchor) on its module's page."""
    module = importlib.import_module(module_name)
    html = (site / "api" / API_PAGES[module_name] / "index.html").read_text()
    for name in public_names(module_name):
        obj = getattr(module, name)
        assert (obj.__doc__ or "").strip(), f"{module_name}.{name}"
        # where it is defined, for a name its module shares (realnvp.data.moons.moons)
        anchors = {f'id="{module_name}.{name}"', f'id="{obj.__module__}.{name}"'}
        assert any(a in html for a in anchors), f"{module_name}.{name} has no API entry"


def test_the_packages_top_level_names_are_documented_where_they_live(site: Path) -> None:
    import realnvp

    html = "".join((site / "api" / p / "index.html").read_text() for p in set(API_PAGES.values()))
    for name in realnvp.__all__:
        if name != "__version__":
            assert re.search(rf'id="realnvp(\.\w+)+\.{name}"', html), name


@pytest.fixture(scope="module")
def server(site: Path) -> Iterator[str]:
    handler = functools.partial(QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if CHROMIUM is None:
        pytest.skip("no chromium on this machine (.ci/run installs Debian's)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


BROKEN_IMAGES = (
    "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
    ".map(i => i.getAttribute('src'))"
)


def test_every_page_loads_in_a_browser(site: Path, server: str, browser) -> None:
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else 0)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    # a request cut short by the next page's navigation (the search worker's) is not an error
    page.on(
        "requestfailed",
        lambda r: (
            errors.append(f"{r.url}: {r.failure}") if "ABORTED" not in (r.failure or "") else 0
        ),
    )
    visited = pages(site)
    for path in visited:
        response = page.goto(server + path, wait_until="load")
        assert response is not None and response.ok, path
        text = page.locator("article").inner_text()
        assert len(text.strip()) > 100, f"{path or 'home'}: the page is (nearly) empty"
        assert page.evaluate(BROKEN_IMAGES) == [], f"{path}: broken images"
        assert errors == [], f"{path}: {errors}"
    assert len(visited) >= 15
    shots = site / "screenshots"
    shots.mkdir(exist_ok=True)
    page.goto(server, wait_until="load")
    page.screenshot(path=str(shots / "home.png"), full_page=True)
    page.goto(server + "gallery/plot_1_quickstart/", wait_until="load")
    page.screenshot(path=str(shots / "gallery_quickstart.png"), full_page=True)
    assert (shots / "home.png").stat().st_size > 10_000
    page.close()


def test_the_search_box_finds_pages(server: str, browser) -> None:
    page = browser.new_page()
    page.goto(server, wait_until="load")
    # typed key by key, as a user does: Material reads the query on keyup (and on focus and
    # when its index is ready), so fill(), which sends no keyup, raced with the focus handler
    # and under load left the query unread (no results in 4 of 6 tries beside busy cores)
    page.locator("input.md-search__input").press_sequentially("ContextAffine")
    results = page.locator(".md-search-result__item")
    results.first.wait_for(timeout=20_000)
    assert results.count() >= 1
    assert "ContextAffine" in page.locator(".md-search-result").inner_text()
    page.close()
