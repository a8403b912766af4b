"""The documentation site as a reader gets it: built once here, the way the README serves it.

What is checked: the site loads nothing from another host (no web fonts, no CDN: Mermaid is
served from the copy in docs/assets, so the state diagrams render offline); the ``>>>``
examples of the docstrings render as code blocks in the API reference, not as Markdown
blockquotes; and MkDocs, started as the README's ``mkdocs serve`` line starts it, prints no
end-of-life notice. The build here is not ``--strict`` (CI builds the site strictly before the
tests run): this test is about what the built pages load and show.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType
from urllib.parse import urljoin, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
MERMAID = "assets/javascripts/mermaid-11.17.2"


def _serve_environment(document: Path) -> dict[str, str]:
    """The variables that ``document``'s ``mkdocs serve`` line sets before the command."""
    [line] = [line for line in document.read_text().splitlines() if "mkdocs serve" in line]
    words = shlex.split(line, comments=True)
    assignments = words[: words.index(".venv/bin/mkdocs")]
    return dict(word.split("=", 1) for word in assignments)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The built site's directory, and what MkDocs printed on stderr while building it."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, **_serve_environment(ROOT / "README.md")}
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--no-strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    return out, built.stderr


class _Loads(HTMLParser):
    """The URLs a page loads by itself: scripts, stylesheets, fonts, images, frames."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.mermaid_diagrams = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if "mermaid" in (found.get("class") or "").split():
            self.mermaid_diagrams += 1
        if tag in ("script", "img", "iframe", "source", "audio", "video") and found.get("src"):
            self.urls.append(found["src"] or "")
        # A link that is no mere hyperlink: a stylesheet, a preconnection, a preload, an icon.
        if tag == "link" and found.get("href"):
            self.urls.append(found["href"] or "")


def _pages(site_dir: Path) -> list[Path]:
    pages = sorted(site_dir.glob("**/*.html"))
    assert len(pages) > 10, "the site has hardly any pages"
    return pages


def _parsed(page: Path) -> _Loads:
    parser = _Loads()
    parser.feed(page.read_text())
    return parser


def _external(url: str) -> bool:
    return url.startswith("//") or urlsplit(url).scheme in ("http", "https")


def test_the_site_loads_nothing_from_another_host(site: tuple[Path, str]) -> None:
    site_dir, _ = site
    external = {
        f"{page.relative_to(site_dir)}: {url}"
        for page in _pages(site_dir)
        for url in _parsed(page).urls
        if _external(url)
    }
    assert not external, "pages load from other hosts:\n" + "\n".join(sorted(external))
    for stylesheet in site_dir.glob("**/*.css"):
        imported = re.findall(r"@import\s+(?:url\()?[\"']?(https?:)?//", stylesheet.read_text())
        assert not imported, f"{stylesheet.relative_to(site_dir)} imports from another host"


def test_mermaid_is_served_with_the_pages_that_draw_diagrams(site: tuple[Path, str]) -> None:
    site_dir, _ = site
    drawn = 0
    for page in _pages(site_dir):
        parsed = _parsed(page)
        if not parsed.mermaid_diagrams:
            continue
        drawn += parsed.mermaid_diagrams
        page_url = page.relative_to(site_dir).as_posix()
        scripts = [urljoin(page_url, url) for url in parsed.urls if url.endswith(".js")]
        assert f"{MERMAID}/mermaid.min.js" in scripts, f"{page_url} draws without Mermaid"
    assert drawn >= 2, "the state diagrams of How it works are missing"
    served = site_dir / MERMAID
    # Material uses the `mermaid` this script defines instead of fetching one from a CDN.
    assert 'globalThis["mermaid"]' in (served / "mermaid.min.js").read_text()
    assert "MIT License" in (served / "LICENSE").read_text()


def test_docstring_examples_render_as_code_blocks(site: tuple[Path, str]) -> None:
    site_dir, _ = site
    reference = sorted((site_dir / "reference").glob("**/*.html"))
    quoted = [page for page in reference if "<blockquote>" in page.read_text()]
    assert not quoted, f"docstring text rendered as blockquotes in {quoted}"
    prompt = '<span class="gp">&gt;&gt;&gt; </span>'  # a >>> prompt in a highlighted block
    pool_page = (site_dir / "reference" / "pool" / "index.html").read_text()
    assert f'{prompt}<span class="n">pool</span> <span class="o">=</span>' in pool_page
    assert prompt in (site_dir / "reference" / "integrations" / "index.html").read_text()


def test_the_readme_serve_line_prints_no_end_of_life_notice(site: tuple[Path, str]) -> None:
    _, printed = site
    assert "end of life" not in printed
    assert _serve_environment(ROOT / "docs" / "index.md") == _serve_environment(ROOT / "README.md")


def _griffe_doctests() -> ModuleType:
    """docs/hooks/griffe_doctests.py, the extension mkdocs.yml gives mkdocstrings."""
    spec = importlib.util.spec_from_file_location(
        "griffe_doctests", ROOT / "docs" / "hooks" / "griffe_doctests.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_doctest_fences_wrap_only_bare_examples() -> None:
    fence = _griffe_doctests().fence_doctests
    docstring = (
        "Summary.\n"
        ">>> a = 1\n"
        ">>> def f():\n"
        "...     return a\n"
        ">>> f()\n"
        "1\n"
        "\n"
        "Examples:\n"
        "    >>> f()\n"
        "    1\n"
        "\n"
        "```python\n"
        ">>> not_a_doctest\n"
        "```\n"
        ">>> last"
    )
    fenced = fence(docstring)
    assert fenced == (
        "Summary.\n"
        "\n"
        "```pycon\n"
        ">>> a = 1\n"
        ">>> def f():\n"
        "...     return a\n"
        ">>> f()\n"
        "1\n"
        "```\n"
        "\n"
        "Examples:\n"
        "    >>> f()\n"
        "    1\n"
        "\n"
        "```python\n"
        ">>> not_a_doctest\n"
        "```\n"
        "\n"
        "```pycon\n"
        ">>> last\n"
        "```"
    )
    assert fence(fenced) == fenced
