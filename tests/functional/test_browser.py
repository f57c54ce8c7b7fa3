"""The page checker itself (devtools/browser.py) on small pages written here: a good page passes, and
each problem a page can have is reported, by file:// and by http on loopback."""

import functools
import http.server
import threading

import numpy as np
import pytest

from devtools import browser
from tests.conftest import png_bytes

pytestmark = pytest.mark.browser

PICTURE = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
GOOD_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Good page</title></head>
<body><h1>Heatmaps</h1><p>An explanation, its legend and a link to another page.</p>
<img src="picture.png" width="256" alt="picture"><img src="data:image/png;base64,{inline}" alt="inline">
<a href="other.html">other</a> <a href="#top">top</a></body></html>"""
BAD_PAGE = """<!doctype html><html><head><title>Bad page</title>
<script src="https://cdn.example.com/library.js"></script></head>
<body><h1>Bad</h1><img src="missing.png" alt="missing"><img src="not-a-picture.png" alt="garbage">
<script>console.error("deliberate console error"); notAFunction();</script>
<a href="nowhere.html">nowhere</a></body></html>"""


#: A table wider than its box: spilling over what stands beside it, unless the box scrolls.
WIDE_PAGE = """<!doctype html><html><head><title>Wide</title><style>
.card{max-width:300px;border:1px solid #ccd}.scrolls{max-width:300px;overflow-x:auto}</style></head><body>
<div class="card" id="metrics"><h3>Occlusion</h3><table><tr><td>max_percentage_perturbed_and_more</td>
<td>0.123456789 0.123456789 0.123456789</td></tr></table></div>
<div class="scrolls"><table><tr><td>max_percentage_perturbed_and_more</td>
<td>0.123456789 0.123456789 0.123456789</td></tr></table></div>
<p style="width:1500px">a paragraph wider than the viewport</p></body></html>"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    import base64

    root = tmp_path_factory.mktemp("site")
    (root / "picture.png").write_bytes(png_bytes(PICTURE))
    (root / "not-a-picture.png").write_bytes(b"these bytes are no PNG")
    (root / "other.html").write_text("<!doctype html><title>other</title><p>other</p>")
    (root / "good.html").write_text(GOOD_PAGE.format(inline=base64.b64encode(png_bytes(PICTURE[:8, :8])).decode()))
    (root / "bad.html").write_text(BAD_PAGE)
    (root / "blank.html").write_text("<!doctype html><html><body></body></html>")
    (root / "wide.html").write_text(WIDE_PAGE)
    (root / "moving.html").write_text(  # leaves as soon as it is scrolled (the checker scrolls for lazy images)
        '<!doctype html><title>moving</title><h1 style="height:3000px">Moving</h1>'
        '<script>addEventListener("scroll", () => { location.href = "good.html"; })</script>')
    return root


@pytest.fixture(scope="module")
def served(site):
    """The same folder over http on a loopback port; yields its base URL."""

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_good_page_passes(page_checker, site, tmp_path):
    report = page_checker.check((site / "good.html").as_uri(), screenshot=tmp_path / "good.png")
    assert report.problems == []
    assert report.ok and report.title == "Good page"
    assert [(i.alt, i.natural_width, i.natural_height) for i in report.images] == [
        ("picture", 64, 48), ("inline", 8, 8)]
    assert report.links == 2 and "An explanation, its legend" in report.text
    assert report.requests == [(site / "good.html").as_uri(), (site / "picture.png").as_uri()]
    shot = report.screenshot
    assert (shot.width, shot.height) == (1280, 800) and not shot.blank
    assert shot.colours >= browser.MIN_SCREENSHOT_COLOURS and shot.stddev > 10


def test_each_problem_is_reported(page_checker, site, tmp_path):
    report = page_checker.check((site / "bad.html").as_uri(), screenshot=tmp_path / "bad.png")
    assert not report.ok
    assert report.external_requests == ["https://cdn.example.com/library.js"]
    assert report.broken_images == [(site / "missing.png").as_uri(), (site / "not-a-picture.png").as_uri()]
    assert report.broken_links == ["nowhere.html"]
    assert report.page_errors == ["notAFunction is not defined"]
    assert any(line.startswith("deliberate console error") for line in report.console_errors)
    assert report.failed_requests == [f"{(site / 'missing.png').as_uri()}: net::ERR_FILE_NOT_FOUND"]
    problems = "\n".join(report.problems)
    for expected in ("external request (aborted): https://cdn.example.com/library.js", "broken image: file://",
                     "broken link: nowhere.html", "page error: notAFunction", "console error: deliberate"):
        assert expected in problems
    assert not report.screenshot.blank  # the heading is drawn: a page with problems is not blank


def test_blank_page_is_reported(page_checker, site, tmp_path):
    report = page_checker.check((site / "blank.html").as_uri(), screenshot=tmp_path / "blank.png")
    assert report.screenshot.blank and (report.screenshot.colours, report.screenshot.stddev) == (1, 0.0)
    assert [line.split(":")[0] for line in report.problems] == ["blank screenshot"]


def test_http_on_loopback(page_checker, served, tmp_path):
    good = page_checker.check(f"{served}/good.html", screenshot=tmp_path / "good-http.png")
    assert good.problems == [] and good.status == 200 and good.content_type.startswith("text/html")
    assert len(good.images) == 2 and good.links == 2 and not good.screenshot.blank

    bad = page_checker.check(f"{served}/bad.html")
    assert f"{served}/missing.png: HTTP 404" in bad.failed_requests
    assert bad.broken_images == [f"{served}/missing.png", f"{served}/not-a-picture.png"]
    assert bad.broken_links == ["nowhere.html"] and bad.external_requests == ["https://cdn.example.com/library.js"]

    missing = page_checker.check(f"{served}/no-such-page.html")
    assert missing.status == 404 and f"{served}/no-such-page.html: HTTP 404" in missing.failed_requests


def test_content_spilling_out_of_its_box_is_reported(page_checker, site):
    report = page_checker.check((site / "wide.html").as_uri())
    assert report.overflow[0] == ('the page is 1508 px wide in a 1280 px viewport: '  # 1500 + the body's margin
                                  'p "a paragraph wider than the viewport" ends at 1508 px')
    (card,) = report.overflow[1:]  # not the box that scrolls, nor the body around the card
    assert card.startswith('div#metrics.card "Occlusion": content ') and card.endswith(" px wide in its 300 px box")
    assert int(card.split("content ")[1].split(" px")[0]) > 300
    assert report.problems == [f"overflow: {line}" for line in report.overflow]


def test_navigation_error_is_reported(page_checker, site):
    report = page_checker.check((site / "absent.html").as_uri())
    assert report.navigation_error and "ERR_FILE_NOT_FOUND" in report.navigation_error
    assert report.problems == [f"navigation failed: {report.navigation_error}",
                               f"failed request: {(site / 'absent.html').as_uri()}: net::ERR_FILE_NOT_FOUND"]
    # A page that goes elsewhere while it is checked is reported, not an exception.
    moving = page_checker.check((site / "moving.html").as_uri())
    assert moving.navigation_error.startswith("while checking the loaded page: ") and moving.title == "moving"


@pytest.mark.parametrize("url, local", [
    ("file:///tmp/x.html", True), ("data:text/html,hi", True), ("http://127.0.0.1:5055/a", True),
    ("https://[::1]:443/", True), ("http://localhost:8000/", False), ("http://127.8.9.10/", False),
    ("http://10.0.0.1/", False), ("https://example.com/", False), ("http://127.0.0.1.example.com/", False),
    ("ftp://127.0.0.1/", False),
])
def test_only_loopback_is_local(url, local):
    assert browser.is_local_url(url) is local


def test_refuses_to_open_other_hosts(page_checker):
    for url in ("https://example.com/", "http://localhost:8000/"):  # no name is ever looked up
        with pytest.raises(ValueError, match="loopback"):
            page_checker.check(url)


def test_command_line(site, capsys):
    """A browser of its own beside the session's open one; prints the report, exits 1 on problems."""
    assert browser.main([str(site / "bad.html")]) == 1
    printed = capsys.readouterr().out.splitlines()
    assert printed[:2] == [f"page: {(site / 'bad.html').as_uri()}", "title: 'Bad page'"]
    assert "broken link: nowhere.html" in printed and "page error: notAFunction is not defined" in printed


def test_caller_thread_keeps_no_event_loop(page_checker):
    """Playwright's loop lives on the checker's thread: other tests may still call asyncio.run."""
    import asyncio

    assert asyncio.run(asyncio.sleep(0, "ran")) == "ran"
