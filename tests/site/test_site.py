"""Open every page of the built book in headless Chromium, with the network cut.

Run after a build (``make test`` builds first; alone: ``scripts/build_book.sh`` then
``pytest tests/site -m site``). The site is served from ``_build/html`` by a local HTTP server
on 127.0.0.1; every request to any other host is aborted and recorded, so a page that needs
the internet (a CDN script, a remote image, a widget module) fails here. For each page:

- MathJax typeset every math element (an ``mjx-container`` inside each), with no TeX error
  and no raw ``$$``/``\\(``/``\\[`` left in the text;
- every ``<img>`` loaded (``complete`` and ``naturalWidth > 0``), no request answered >= 400;
- no traceback, error name or stderr in the output cells, no docutils system message;
- on a notebook page, a Colab launch link to exactly this chapter's notebook on ``main``;
- every local link resolves to a file of the site, and its ``#anchor`` exists there;
- on a page whose notebook saved widget state, the widgets are rendered and each slider
  shows its saved value;
- nothing is cut off at the right: no text or element reaches past the content column, or past
  the edge of a box that clips or scrolls it (a code cell, a source listing, an output);
- citations print the label of their bibliography entry ("Gu et al., 2022a" in the text and in
  the list), no two entries of a bibliography share a label, and each entry links once;
- every button of an output (the animation's player) shows an icon that needs no system font:
  an inline SVG or image with something drawn, or text in ASCII or in a font the page ships
  (Chromium reports the fonts it rendered a node with);
- no JavaScript error;
- a full-page screenshot is saved to ``_build/screenshots/``, and one of each animation player.

The browser is Debian's Chromium (``/usr/bin/chromium``, ``scripts/setup.sh --browser``
installs it), or the one the ``CHROMIUM`` variable names (a path or a command); Playwright's own
browser downloads are never used.
"""

from __future__ import annotations

import functools
import http.server
import json
import math
import os
import re
import shutil
import threading
from pathlib import Path
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

pytestmark = pytest.mark.site

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "_build" / "html"
STAGED = ROOT / "_build" / "src"  # what the build rendered (see scripts/build_book.sh)
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
COLAB = "https://colab.research.google.com/github/ssm-companion/ssm-companion/blob/main/"
TIMEOUT_MS = 120_000
SKIP_DIRS = {"_static", "_sources", "_images", "vendor"}
ERROR_TEXT = re.compile(
    r"Traceback|(^|\s)[A-Za-z_.]*(Error|Exception)(:|$)|(^|\s)Error\b", re.MULTILINE
)
RAW_TEX = re.compile(r"\$\$|\\\(|\\\)|\\\[|\\\]|\\begin\{")


def site_pages() -> list[str]:
    if not SITE.is_dir():
        return []
    return sorted(
        p.relative_to(SITE).as_posix()
        for p in SITE.rglob("*.html")
        if not SKIP_DIRS.intersection(p.relative_to(SITE).parts)
    )


def source_notebook(page: str) -> Path | None:
    """The notebook a page was rendered from (the staged, possibly executed, copy)."""
    stem = page.removesuffix(".html")
    for base in (STAGED, ROOT):
        nb = base / f"{stem}.ipynb"
        if nb.exists():
            return nb
    return None


def is_redirect(page: str) -> bool:
    return 'http-equiv="Refresh"' in (SITE / page).read_text(errors="replace")


@functools.cache
def anchors_of(path: Path) -> frozenset[str]:
    text = path.read_text(errors="replace")
    return frozenset(re.findall(r'\s(?:id|name)="([^"]+)"', text))


def slider_models(nb_path: Path) -> list[dict]:
    """Slider models of a notebook's saved widget state: description, value, readout."""
    nb = json.loads(nb_path.read_text())
    state = nb.get("metadata", {}).get("widgets", {})
    state = state.get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    sliders = []
    for model in state.values():
        name = model.get("model_name", "")
        if name.endswith("SliderModel") and "Range" not in name:
            s = model.get("state", {})
            fmt = s.get("readout_format", ".2f" if name.startswith("Float") else "d")
            sliders.append(
                {
                    "description": s.get("description", ""),
                    "value": s["value"],
                    "format": fmt,
                    "readout_shown": s.get("readout", True),
                }
            )
    return sliders


def readout_matches(shown: str, value: float, fmt: str) -> bool:
    """Whether a slider's readout (formatted by d3-format in the browser) shows ``value``.

    d3 and Python format alike only for some specifiers ('.3g' gives '0.0100' in d3 and '0.01'
    in Python), so compare numbers, within the rounding the format allows.
    """
    try:
        number = float(shown.replace("\u2212", "-").replace(",", ""))
    except ValueError:
        return shown == format(value, fmt)
    m = re.search(r"\.(\d+)([a-z%]?)$", fmt)
    digits, kind = (int(m.group(1)), m.group(2)) if m else (None, fmt[-1:])
    if kind in ("", "f") and digits is not None:
        return abs(number - value) <= 0.5 * 10**-digits * (1 + 1e-9)
    if kind in ("g", "e", "r", "s") and digits is not None:
        return math.isclose(number, value, rel_tol=0.5 * 10 ** (1 - digits) * (1 + 1e-9))
    if kind == "d":
        return number == round(value)
    return math.isclose(number, value, rel_tol=1e-3)


def has_widget_state(nb_path: Path | None) -> bool:
    if nb_path is None:
        return False
    meta = json.loads(nb_path.read_text()).get("metadata", {})
    state = meta.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    return bool(state.get("state"))


# --- fixtures -----------------------------------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # keep the test output readable
        pass


@pytest.fixture(scope="module")
def base_url():
    if not (SITE / "index.html").exists():
        pytest.fail(f"no built site in {SITE}: run scripts/build_book.sh first (make test does)")
    handler = functools.partial(_QuietHandler, directory=str(SITE))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module", autouse=True)
def fresh_screenshots():
    """Screenshots of this run only: none left over from pages the site no longer has."""
    for old in SHOTS.glob("*.png"):
        old.unlink()


def chromium() -> str:
    """The browser: $CHROMIUM (a path or a command on PATH), else Debian's /usr/bin/chromium."""
    found = shutil.which(CHROMIUM)
    if found is None:
        how = "set CHROMIUM to a Chromium binary, or run scripts/setup.sh --browser"
        pytest.fail(f"no browser at {CHROMIUM!r} (CHROMIUM={os.environ.get('CHROMIUM')!r}): {how}")
    return found


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    executable = chromium()
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),  # a new, empty user-data-dir
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
            service_workers="block",
        )
        # Generous: CI has 2 shared cores, and a chapter page can weigh megabytes (animations).
        context.set_default_timeout(TIMEOUT_MS)
        context.set_default_navigation_timeout(TIMEOUT_MS)
        yield context
        context.close()


# --- tests --------------------------------------------------------------------------------------


def test_site_has_every_toc_page():
    """The build holds a page for every file of _toc.yml (and the test sees them all)."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    entries = [toc["root"]]
    stack = list(toc.get("chapters", [])) + list(toc.get("parts", []))
    while stack:
        entry = stack.pop()
        if "file" in entry:
            entries.append(entry["file"])
        stack.extend(entry.get("chapters", []) + entry.get("sections", []))
    pages = set(site_pages())
    missing = [e for e in entries if f"{Path(e).with_suffix('').as_posix()}.html" not in pages]
    assert not missing, f"pages missing from {SITE}: {missing}"


@pytest.mark.parametrize("page", site_pages() or ["<no site built>"])
def test_page(page, base_url, browser_context):
    if page == "<no site built>":
        pytest.fail(f"no pages in {SITE}: run scripts/build_book.sh first")
    problems: list[str] = []
    url = urljoin(base_url, page)

    blocked: list[str] = []

    def route(r):
        if r.request.url.startswith(base_url):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    tab = browser_context.new_page()
    tab.route("**/*", route)
    bad_responses: list[str] = []
    tab.on(
        "response",
        lambda resp: (
            resp.status >= 400
            and not resp.url.endswith("/favicon.ico")
            and bad_responses.append(f"{resp.status} {resp.url}")
        ),
    )
    js_errors: list[str] = []
    tab.on("pageerror", lambda exc: js_errors.append(str(exc)))
    try:
        # "load", not "networkidle" (which can miss its moment and hang): each check waits for
        # what it needs (MathJax's startup promise, the widgets, the images).
        tab.goto(url, wait_until="load")
        if is_redirect(page):
            # index.html sends readers to the root page; the target is checked as its own page.
            tab.wait_for_url(lambda u: u != url, timeout=20_000)
        else:
            for check in (
                check_math,
                check_images,
                check_outputs,
                check_colab,
                check_links,
                check_widgets,
                check_overflow,
                check_citations,
                check_buttons,
            ):
                try:
                    problems += check(tab, page, base_url)
                except Exception as exc:  # a check that cannot even run is a failure too
                    problems.append(f"{check.__name__}: {type(exc).__name__}: {exc}")
        tab.evaluate("() => document.fonts.ready.then(() => true)")
        SHOTS.mkdir(parents=True, exist_ok=True)
        shot = page.replace("/", "__")
        tab.screenshot(
            path=str(SHOTS / f"{shot}.png"),
            full_page=True,
            animations="disabled",  # finish CSS transitions (the sidebar slides in)
        )
        players = tab.locator(".cell_output .animation")
        for i in range(players.count()):  # the player's buttons, close up
            players.nth(i).screenshot(path=str(SHOTS / f"{shot}.animation-{i}.png"))
    finally:
        tab.close()
    problems += [f"request to the network (the site must work offline): {u}" for u in blocked]
    problems += [f"HTTP error: {r}" for r in bad_responses]
    problems += [f"JavaScript error: {e}" for e in js_errors]
    assert not problems, f"{page}:\n  " + "\n  ".join(problems)


# --- checks (each returns a list of problems) ---------------------------------------------------


def check_math(tab, page: str, base_url: str) -> list[str]:
    n_math = tab.locator(".math").count()
    raw = tab.evaluate(
        """() => {
        const body = document.querySelector('main') || document.body;
        const copy = body.cloneNode(true);
        copy.querySelectorAll('pre, code, script, style, mjx-container, .cell_input, '
            + '.highlight, textarea').forEach(e => e.remove());
        return copy.innerText;
    }"""
    )
    problems = [f"TeX left untypeset in the text: {m!r}" for m in set(RAW_TEX.findall(raw))]
    if n_math == 0:
        return problems
    tab.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise")
    tab.evaluate("() => MathJax.startup.promise")
    untypeset = tab.evaluate(
        "() => Array.from(document.querySelectorAll('.math'))"
        ".filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 80))"
    )
    problems += [f"math not typeset by MathJax: {t!r}" for t in untypeset]
    if tab.locator("mjx-container").count() == 0:
        problems.append("the page has math but no mjx-container")
    errors = tab.evaluate(
        "() => Array.from(document.querySelectorAll('mjx-merror'))"
        ".map(e => e.getAttribute('data-mjx-error') || e.textContent)"
    )
    problems += [f"MathJax error: {e}" for e in errors]
    return problems


def check_images(tab, page: str, base_url: str) -> list[str]:
    broken = tab.evaluate(
        """async () => {
        const imgs = Array.from(document.images);
        imgs.forEach(i => { i.loading = 'eager'; });
        await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => {
            i.addEventListener('load', r); i.addEventListener('error', r);
            setTimeout(r, 60000);
        })));
        return imgs.filter(i => !(i.complete && i.naturalWidth > 0))
                   .map(i => i.getAttribute('src'));
    }"""
    )
    return [f"image not loaded: {src}" for src in broken]


def check_outputs(tab, page: str, base_url: str) -> list[str]:
    problems = []
    for selector, what in [
        (".cell_output .traceback, .cell_output .output.error", "an error output"),
        (".cell_output .stderr", "stderr in an output"),
        (".system-message", "a docutils system message"),
    ]:
        n = tab.locator(selector).count()
        if n:
            problems.append(f"{n} x {what} ({selector})")
    texts = tab.evaluate(
        "() => Array.from(document.querySelectorAll('.cell_output')).map(e => e.innerText)"
    )
    for text in texts:
        m = ERROR_TEXT.search(text)
        if m:
            start = max(0, m.start() - 40)
            problems.append(f"error text in an output cell: {text[start : m.end() + 40]!r}")
    return problems


def check_colab(tab, page: str, base_url: str) -> list[str]:
    nb = ROOT / page.replace(".html", ".ipynb")
    hrefs = tab.evaluate(
        "() => Array.from(document.querySelectorAll('a[href*=\"colab.research.google.com\"]'))"
        ".map(a => a.getAttribute('href'))"
    )
    if not nb.exists():
        return []
    expected = COLAB + nb.relative_to(ROOT).as_posix()
    if expected not in hrefs:
        return [f"no Colab launch link {expected} (found {hrefs})"]
    return [f"a Colab link to another notebook: {h}" for h in hrefs if h != expected]


def check_links(tab, page: str, base_url: str) -> list[str]:
    hrefs = tab.evaluate(
        "() => Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'))"
    )
    page_url = urljoin(base_url, page)
    problems = []
    for href in sorted(set(hrefs)):
        if href.startswith(("javascript:", "mailto:", "data:")):
            continue
        absolute, fragment = urldefrag(urljoin(page_url, href))
        if not absolute.startswith(base_url):
            continue  # external: not followed (the network is cut), not a broken internal link
        rel = unquote(urlsplit(absolute).path)[len(urlsplit(base_url).path) :]
        target = SITE / rel
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            problems.append(f"broken link {href!r}: {target.relative_to(SITE)} does not exist")
        elif fragment and target.suffix == ".html" and fragment not in anchors_of(target):
            problems.append(f"broken anchor {href!r}: no id {fragment!r} in {rel}")
    return problems


def check_widgets(tab, page: str, base_url: str) -> list[str]:
    nb = source_notebook(page)
    if not has_widget_state(nb):
        return []
    problems = []
    if tab.locator('script[type="application/vnd.jupyter.widget-state+json"]').count() == 0:
        return ["the notebook saved widget state but the page does not embed it"]
    unrendered = """() => Array.from(document.querySelectorAll(
            'script[type="application/vnd.jupyter.widget-view+json"]'))
        .filter(s => { const p = s.previousElementSibling;
                       return !(p && p.querySelector('.jupyter-widgets')); }).length"""
    n_views = tab.locator('script[type="application/vnd.jupyter.widget-view+json"]').count()
    if n_views == 0:
        return ["the notebook saved widget state but the page shows no widget view"]
    # The widget manager renders each view next to its <script> placeholder, after the page's
    # load event. A widget that fails to load leaves nothing (no error text): wait for all.
    try:
        tab.wait_for_function(f"() => ({unrendered})() === 0", timeout=60_000)
    except PlaywrightTimeout:
        pass  # counted and reported just below
    empty = tab.evaluate(unrendered)
    if empty:
        problems.append(f"{empty} of {n_views} widget view(s) not rendered")
    shown = tab.evaluate(
        """() => Array.from(document.querySelectorAll('.widget-slider')).map(s => ({
            description: (s.querySelector('.widget-label') || {}).textContent || '',
            readout: ((s.querySelector('.widget-readout') || {}).textContent || '').trim(),
        }))"""
    )
    for model in slider_models(nb):
        same = [s["readout"] for s in shown if s["description"] == model["description"]]
        if not same:
            problems.append(f"slider {model['description']!r} is not rendered")
        elif model["readout_shown"] and not any(
            readout_matches(r, model["value"], model["format"]) for r in same
        ):
            problems.append(
                f"slider {model['description']!r} shows {same}, saved value {model['value']} "
                f"(readout format {model['format']!r})"
            )
    return problems


# Everything that reaches past the right edge of the content column, or of the box that clips
# or scrolls it, grouped by that box. Text is measured through Ranges (a line of a <pre> is a
# text node, not an element). MathJax's copy for screen readers is hidden on purpose.
OVERFLOW_JS = """() => {
    // the chapter's article; the search page has only its main element
    const column = document.querySelector('article.bd-article') || document.querySelector('main');
    if (!column) return null;
    const clips = (e) => getComputedStyle(e).overflowX !== 'visible';
    const innerRight = (e) => e.getBoundingClientRect().left + e.clientLeft + e.clientWidth;
    const cut = new Map();
    const range = document.createRange();
    const show = NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT;
    const walker = document.createTreeWalker(column, show);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const text = node.nodeType === Node.TEXT_NODE;
        if ((text ? node.parentElement : node).closest('mjx-assistive-mml')) continue;
        if (text && !node.textContent.trim()) continue;
        if (text) range.selectNodeContents(node);
        const r = (text ? range : node).getBoundingClientRect();
        if (r.width === 0 || r.height === 0) continue;
        let box = node.parentElement;
        while (box !== column && !clips(box)) box = box.parentElement;
        const edge = box === column ? column.getBoundingClientRect().right : innerRight(box);
        if (r.right > edge + 1) {
            const seen = cut.get(box) || {count: 0, px: 0};
            seen.count += 1;
            seen.px = Math.max(seen.px, Math.ceil(r.right - edge));
            cut.set(box, seen);
        }
    }
    return Array.from(cut, ([box, seen]) => ({
        box: box === column ? 'the content column' : `<${box.tagName.toLowerCase()}>`,
        text: (box === column ? '' : box.innerText).trim().slice(0, 60).replace(/\\s+/g, ' '),
        count: seen.count,
        px: seen.px,
    }));
}"""


def check_overflow(tab, page: str, base_url: str) -> list[str]:
    cut = tab.evaluate(OVERFLOW_JS)
    if cut is None:
        return ["no content column (article.bd-article or main) to check for overflow"]
    return [
        f"cut off at the right: {c['count']} piece(s) of {c['box']} {c['text']!r} reach "
        f"{c['px']} px past its edge"
        for c in cut
    ]


def check_citations(tab, page: str, base_url: str) -> list[str]:
    found = tab.evaluate(
        """() => {
        const label = (c) => c.querySelector('.label').textContent.trim().replace(/^\\[|\\]$/g, '');
        const entries = Array.from(document.querySelectorAll('div.citation')).map(c => ({
            id: c.id,
            label: label(c),
            links: Array.from(c.querySelectorAll('a.reference.external')).map(a => a.href),
        }));
        const byId = Object.fromEntries(entries.map(e => [e.id, e.label]));
        const cites = Array.from(document.querySelectorAll('a.reference.internal[href^="#"]'))
            .filter(a => a.getAttribute('href').slice(1) in byId)
            .map(a => ({text: a.textContent.trim(), label: byId[a.getAttribute('href').slice(1)]}));
        return {entries, cites};
    }"""
    )
    problems = []
    for text, label in sorted({(c["text"], c["label"]) for c in found["cites"]}):
        # {cite:p} prints the whole label, {cite:t} its year after the authors' names
        if text != label and not label.endswith(", " + text):
            problems.append(f"citation {text!r} of the bibliography entry labelled {label!r}")
    labels = [e["label"] for e in found["entries"]]
    problems += [
        f"two bibliography entries labelled {x!r}"
        for x in sorted(set(labels))
        if labels.count(x) > 1
    ]
    for entry in found["entries"]:
        if len(entry["links"]) > 1:
            problems.append(
                f"bibliography entry {entry['label']!r} links more than once: {entry['links']}"
            )
    return problems


def check_buttons(tab, page: str, base_url: str) -> list[str]:
    buttons = tab.locator(".cell_output button")
    if buttons.count() == 0:
        return []
    cdp = tab.context.new_cdp_session(tab)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
    node_ids = cdp.send(
        "DOM.querySelectorAll", {"nodeId": root, "selector": ".cell_output button"}
    )["nodeIds"]
    problems = []
    for i, node_id in enumerate(node_ids):
        button = buttons.nth(i)
        name = button.get_attribute("title") or button.get_attribute("aria-label") or f"#{i}"
        drawn = button.evaluate(
            """b => Array.from(b.querySelectorAll('svg, img')).some(e => {
                const r = e.getBoundingClientRect();
                const marks = e.tagName === 'IMG' ? e.naturalWidth > 0
                    : e.querySelector('path, rect, circle, ellipse, line, polyline, polygon, use');
                return r.width > 0 && r.height > 0 && marks;
            })"""
        )
        text = button.evaluate("b => b.textContent.replace(/\\s+/g, '')")
        # the fonts Chromium drew the text of the button and of everything inside it with
        inside = cdp.send("DOM.querySelectorAll", {"nodeId": node_id, "selector": "*"})
        fonts = [
            font
            for node in [node_id, *inside["nodeIds"]]
            for font in cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
        ]
        system = sorted({f["familyName"] for f in fonts if not f["isCustomFont"]})
        if not drawn and not text:
            problems.append(f"button {name!r} shows nothing (no SVG, image or text)")
        elif system and not text.isascii():
            problems.append(
                f"button {name!r} draws {text!r} with the reader's system font(s) {system}: an "
                "empty box where those fonts lack the glyph (use an inline SVG)"
            )
    cdp.detach()
    return problems


def test_index_page_is_not_empty():
    """Sphinx's Index page (genindex) is either left out of the site or lists something."""
    index = SITE / "genindex.html"
    if not (SITE / "index.html").exists():
        pytest.fail(f"no built site in {SITE}: run scripts/build_book.sh first")
    if index.exists():
        entries = re.findall(r'<table[^>]*class="[^"]*indextable', index.read_text())
        assert entries, "genindex.html is an empty Index page (set html_use_index: false)"
