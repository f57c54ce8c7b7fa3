"""Open a page in headless Chromium and report what a person would see go wrong.

Debian's ``chromium`` (installed by ``devtools/chromium.sh``) driven by Playwright with
``executable_path``: Playwright never downloads a browser here. Chromium starts headless with the
flags that keep it off the network (no background networking, component updates, sync or QUIC, and
a resolver rule that looks up no name) and, as Playwright's ``launch`` always does, a fresh
temporary profile. Pages may be ``file://`` or ``http(s)`` on 127.0.0.1 or [::1]; any request a
page makes to another host is aborted and listed.

:meth:`PageChecker.check` returns a :class:`PageReport` and raises nothing on page problems (a
navigation error, console errors, uncaught exceptions, failed requests, broken images or links, a
blank screenshot are all fields of the report): tests assert on it. It raises only when the
browser cannot run at all (:class:`BrowserUnavailable`) or when asked for a non-loopback URL.

``python -m devtools.browser URL --screenshot out.png`` prints the report as lines and exits 1 when
the page has a problem.
"""

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

REPO = Path(__file__).resolve().parent.parent
INSTALL_SCRIPT = REPO / "devtools" / "chromium.sh"
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
#: The hosts pages may be served from; Chromium resolves no other name or address. Not "localhost":
#: a name, which the link check (Playwright's driver) would look up in DNS for its IPv6 address.
LOOPBACK_HOSTS = ("127.0.0.1", "::1")
#: Headless without the sandbox (root in CI) and without any traffic of Chromium's own: without the
#: background-networking flags it tries to reach Google's hosts at every start, and even with them it
#: still looks up update.googleapis.com and accounts.google.com (seen with strace). The resolver rule
#: answers "not found" for everything but LOOPBACK_HOSTS (IP literals included) without asking DNS.
CHROMIUM_ARGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND" + "".join(f", EXCLUDE {host}" for host in LOOPBACK_HOSTS),
)
LOCAL_SCHEMES = frozenset({"file", "data", "blob", "about"})
#: A screenshot with fewer distinct colours or a lower pixel standard deviation (0-255, mean over
#: R, G, B) is blank. Measured at 1280x800: an empty page has 1 colour and 0.0; a page holding only
#: a one-word heading has more than 16 colours (anti-aliasing) and 7.8; a heading, a line of text and
#: a 200-pixel picture 29.
MIN_SCREENSHOT_COLOURS = 16
MIN_SCREENSHOT_STDDEV = 4.0
#: Longest wait for the page's load event, then for every image to finish loading or failing.
NAVIGATION_TIMEOUT_MS = 30_000
IMAGES_TIMEOUT_MS = 15_000
MAX_LISTED_URL = 120

# Scrolls through the page so that lazy images start, waits for each image to load or fail (at most
# `timeout` ms), then lists every image as [src, complete, naturalWidth, naturalHeight, alt].
_IMAGES_JS = """async (timeout) => {
  const step = Math.max(window.innerHeight, 200);
  for (let y = 0, n = 0; y < document.documentElement.scrollHeight && n < 500; y += step, n++) {
    window.scrollTo(0, y);
    await new Promise(resolve => requestAnimationFrame(resolve));
  }
  window.scrollTo(0, 0);
  const settled = Promise.all([...document.images].map(img => img.complete ? null : new Promise(resolve => {
    img.addEventListener('load', resolve, {once: true});
    img.addEventListener('error', resolve, {once: true});
  })));
  await Promise.race([settled, new Promise(resolve => setTimeout(resolve, timeout))]);
  return [...document.images].map(img => [img.currentSrc || img.src, img.complete, img.naturalWidth,
                                          img.naturalHeight, img.alt]);
}"""
_LINKS_JS = "() => [...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))"
# Content that spills sideways out of its box, over what stands beside it: the page wider than the
# viewport, and each innermost element whose content is wider than itself while its overflow is
# visible (a box that scrolls or clips is not listed). At most `limit` lines.
_OVERFLOW_JS = """(limit) => {
  const lines = [], root = document.documentElement, all = [...document.querySelectorAll('body *')];
  const describe = el => {
    const text = (el.innerText || el.textContent || '').trim().split('\\n')[0].slice(0, 40);
    return el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') + [...el.classList].map(c => '.' + c).join('') +
      ` "${text}"`;
  };
  if (root.scrollWidth > root.clientWidth + 1) {
    const edge = el => el.getBoundingClientRect().right + window.scrollX;
    const past = all.filter(el => edge(el) > root.clientWidth + 1 && edge(el.parentElement) <= root.clientWidth + 1);
    lines.push(`the page is ${root.scrollWidth} px wide in a ${root.clientWidth} px viewport` +
      (past.length ? ': ' + past.slice(0, 3).map(el => `${describe(el)} ends at ${Math.round(edge(el))} px`)
        .join(', ') : ''));
  }
  const spilling = all.filter(el =>
    el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX === 'visible');
  for (const el of spilling.filter(el => !spilling.some(other => other !== el && el.contains(other)))) {
    if (lines.length >= limit) break;
    lines.push(`${describe(el)}: content ${el.scrollWidth} px wide in its ${el.clientWidth} px box`);
  }
  return lines;
}"""
MAX_OVERFLOW_LINES = 20


class BrowserUnavailable(RuntimeError):
    """Chromium or Playwright cannot run here (not a problem of the page)."""


def short(url: str) -> str:
    """A URL as a report line shows it: data URIs and long URLs cut."""
    return url if len(url) <= MAX_LISTED_URL else url[:MAX_LISTED_URL - 3] + "..."


def is_loopback_host(host: str | None) -> bool:
    return bool(host) and host.strip("[]").lower() in LOOPBACK_HOSTS


def is_local_url(url: str) -> bool:
    """True for file/data/blob/about URLs and http(s)/ws(s) URLs on one of LOOPBACK_HOSTS."""
    parts = urlsplit(url)
    if parts.scheme in LOCAL_SCHEMES:
        return True
    return parts.scheme in {"http", "https", "ws", "wss"} and is_loopback_host(parts.hostname)


@dataclass
class ScreenshotCheck:
    path: Path
    width: int
    height: int
    colours: int  # distinct colours, counted up to MIN_SCREENSHOT_COLOURS (enough to decide)
    stddev: float  # pixel standard deviation, mean over R, G, B

    @property
    def blank(self) -> bool:
        return self.colours < MIN_SCREENSHOT_COLOURS or self.stddev < MIN_SCREENSHOT_STDDEV


def check_screenshot(path: Path) -> ScreenshotCheck:
    """Decode a screenshot with Pillow and measure whether anything is drawn on it."""
    from PIL import Image, ImageStat

    with Image.open(path) as image:
        rgb = image.convert("RGB")
    colours = rgb.getcolors(MIN_SCREENSHOT_COLOURS)  # None when there are more than that
    stddev = sum(ImageStat.Stat(rgb).stddev) / 3
    return ScreenshotCheck(path, rgb.width, rgb.height,
                           MIN_SCREENSHOT_COLOURS if colours is None else len(colours), round(stddev, 2))


@dataclass(frozen=True)
class PageImage:
    src: str
    complete: bool
    natural_width: int
    natural_height: int
    alt: str

    @property
    def loaded(self) -> bool:
        return self.complete and self.natural_width > 0


@dataclass
class PageReport:
    url: str
    title: str = ""
    navigation_error: str | None = None
    status: int | None = None  # HTTP status of the page itself (None for file://)
    content_type: str | None = None
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)  # uncaught exceptions
    requests: list[str] = field(default_factory=list)  # every URL the page asked for (not data:)
    failed_requests: list[str] = field(default_factory=list)  # "URL: reason or HTTP status"
    external_requests: list[str] = field(default_factory=list)  # non-loopback hosts: aborted
    images: list[PageImage] = field(default_factory=list)  # every <img>, in document order
    text: str = ""  # what the page shows as text (document.body.innerText)
    links: int = 0
    broken_links: list[str] = field(default_factory=list)  # same-origin links whose target is missing
    overflow: list[str] = field(default_factory=list)  # content spilling sideways out of its box
    screenshot: ScreenshotCheck | None = None

    @property
    def broken_images(self) -> list[str]:
        """Sources of the images that did not load (not complete, or naturalWidth 0)."""
        return [image.src for image in self.images if not image.loaded]

    @property
    def problems(self) -> list[str]:
        """One line per problem; empty when the page is fine."""
        lines = [f"navigation failed: {self.navigation_error}"] if self.navigation_error else []
        lines += [f"console error: {text}" for text in self.console_errors]
        lines += [f"page error: {text}" for text in self.page_errors]
        lines += [f"failed request: {text}" for text in self.failed_requests]
        lines += [f"external request (aborted): {short(url)}" for url in self.external_requests]
        lines += [f"broken image: {short(src)}" for src in self.broken_images]
        lines += [f"broken link: {short(href)}" for href in self.broken_links]
        lines += [f"overflow: {text}" for text in self.overflow]
        if self.screenshot is not None and self.screenshot.blank:
            lines.append(f"blank screenshot: {self.screenshot.colours} colours, stddev {self.screenshot.stddev} "
                         f"(floors {MIN_SCREENSHOT_COLOURS}, {MIN_SCREENSHOT_STDDEV})")
        return lines

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        summary = [f"page: {short(self.url)}", f"title: {self.title!r}",
                   f"requests: {len(self.requests)}, images: {len(self.images)}, links: {self.links}"]
        if self.screenshot is not None:
            shot = self.screenshot
            summary.append(f"screenshot: {shot.path} ({shot.width}x{shot.height}, "
                           f"{'>=' if shot.colours >= MIN_SCREENSHOT_COLOURS else ''}{shot.colours} colours, "
                           f"stddev {shot.stddev})")
        problems = self.problems
        return summary + (problems or ["no problems"])


def ensure_chromium() -> Path:
    """Install Debian's chromium with devtools/chromium.sh when it is missing; returns its path."""
    if not CHROMIUM.exists():
        done = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=900,
                              stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0 or not CHROMIUM.exists():
            raise BrowserUnavailable(f"{INSTALL_SCRIPT} failed ({done.returncode}):\n{done.stdout[-2000:]}\n"
                                     f"{done.stderr[-2000:]}")
    return CHROMIUM


class PageChecker(AbstractContextManager):
    """One headless Chromium for several pages: ``with PageChecker() as checker: checker.check(url)``.

    Each page gets a new browser context (no cookies, cache or storage shared between pages).
    Playwright's sync API runs an asyncio loop in the thread that starts it, which would make
    ``asyncio.run`` fail in that thread until it stops: it lives on a thread of its own here, so a
    checker kept open across tests (or a second one) leaves the caller's thread as it was.
    """

    def __init__(self, *, viewport: tuple[int, int] = (1280, 800)):
        self.viewport = viewport
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chromium")
        self._playwright = None
        self._browser = None

    def __enter__(self) -> "PageChecker":
        try:
            self._thread.submit(self._start).result()
        except BaseException:
            self._thread.shutdown()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            self._thread.submit(self._stop).result()
        finally:
            self._thread.shutdown()

    def _start(self) -> None:
        try:
            from playwright.sync_api import Error, sync_playwright
        except ImportError as error:  # requirements-dev.txt pins it: make setup
            raise BrowserUnavailable(f"playwright is not installed: {error}") from error
        executable = ensure_chromium()
        self._playwright = sync_playwright().start()
        try:
            self._browser = self._playwright.chromium.launch(executable_path=str(executable), headless=True,
                                                             args=list(CHROMIUM_ARGS))
        except Error as error:
            self._playwright.stop()
            self._playwright = None
            raise BrowserUnavailable(f"Chromium did not start: {error}") from error

    def _stop(self) -> None:
        if self._browser is not None:
            self._browser.close()
        if self._playwright is not None:
            self._playwright.stop()
        self._browser = self._playwright = None

    def check(self, url: str, *, screenshot: Path | None = None) -> PageReport:
        """Open ``url``, wait for it and its images, and report (see :class:`PageReport`)."""
        if not is_local_url(url):
            raise ValueError(f"only file:// pages and http(s) pages on loopback ({', '.join(LOOPBACK_HOSTS)}) "
                             f"are opened here, not {url!r}")
        if self._browser is None:
            raise RuntimeError("use PageChecker as a context manager")
        return self._thread.submit(self._check, url, screenshot).result()

    def _check(self, url: str, screenshot: Path | None) -> PageReport:
        from playwright.sync_api import Error

        report = PageReport(url)
        context = self._browser.new_context(viewport={"width": self.viewport[0], "height": self.viewport[1]},
                                            service_workers="block")
        context.route("**/*", lambda route: route.abort("blockedbyclient")
                      if not is_local_url(route.request.url) else route.continue_())
        page = context.new_page()
        page.set_default_timeout(NAVIGATION_TIMEOUT_MS)
        page.on("console", lambda message: report.console_errors.append(_console_line(message))
                if message.type == "error" else None)
        page.on("pageerror", lambda error: report.page_errors.append(str(error)))
        page.on("request", lambda request: _record_request(report, request.url))
        page.on("requestfailed", lambda request: None if not is_local_url(request.url) else
                report.failed_requests.append(f"{short(request.url)}: {request.failure}"))
        page.on("response", lambda response: report.failed_requests.append(
            f"{short(response.url)}: HTTP {response.status}") if response.status >= 400 else None)
        try:
            try:
                response = page.goto(url, wait_until="load")
            except Error as error:
                report.navigation_error = str(error).splitlines()[0]
                return report
            if response is not None and urlsplit(url).scheme in {"http", "https"}:
                report.status, report.content_type = response.status, response.headers.get("content-type")
            try:
                self._inspect(context, page, report, screenshot)
            except Error as error:  # the page crashed, navigated away or hung: a problem of the page
                report.navigation_error = f"while checking the loaded page: {str(error).splitlines()[0]}"
            return report
        finally:
            context.close()

    @staticmethod
    def _inspect(context, page, report: PageReport, screenshot: Path | None) -> None:
        report.title = page.title()
        report.images = [PageImage(*image) for image in page.evaluate(_IMAGES_JS, IMAGES_TIMEOUT_MS)]
        report.text = page.evaluate("() => document.body ? document.body.innerText : ''")
        hrefs = page.evaluate(_LINKS_JS)
        report.links = len(hrefs)
        report.broken_links = [href for href in hrefs if not _link_resolves(context, page.url, href)]
        report.overflow = page.evaluate(_OVERFLOW_JS, MAX_OVERFLOW_LINES)
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
            report.screenshot = check_screenshot(screenshot)


def _console_line(message) -> str:
    where = message.location or {}
    place = f" ({short(where['url'])}:{where.get('lineNumber', 0) + 1})" if where.get("url") else ""
    return f"{message.text}{place}"


def _record_request(report: PageReport, url: str) -> None:
    if url.startswith("data:"):
        return
    report.requests.append(url)
    if not is_local_url(url):
        report.external_requests.append(url)


def _link_resolves(context, page_url: str, href: str) -> bool:
    """Same-origin links only: a file that exists, or a loopback URL that answers below 400.
    Fragments, mailto: and the like, and links to other hosts, are not followed."""
    target = urljoin(page_url, href)
    page_parts, parts = urlsplit(page_url), urlsplit(target)
    if parts.scheme == "file" and page_parts.scheme == "file":
        return Path(unquote(parts.path)).exists()
    if parts.scheme in {"http", "https"} and parts.netloc == page_parts.netloc and is_local_url(target):
        if parts._replace(fragment="") == page_parts._replace(fragment=""):
            return True
        from playwright.sync_api import Error

        try:
            return context.request.get(target.split("#")[0], max_redirects=0).status < 400
        except Error:  # refused, reset, timed out
            return False
    return True


def check_page(url: str, *, screenshot: Path | None = None) -> PageReport:
    """One page in a browser of its own; :class:`PageChecker` to check several."""
    with PageChecker() as checker:
        return checker.check(url, screenshot=screenshot)


def as_url(target: str) -> str:
    """A path (relative or absolute) becomes a file:// URL; URLs are kept."""
    if urlsplit(target).scheme in {"http", "https", "file"}:
        return target
    return Path(target).resolve().as_uri()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="a file path, file:// URL or http(s) URL on a loopback host")
    parser.add_argument("--screenshot", type=Path, help="save a full-page screenshot here and check it is not blank")
    args = parser.parse_args(argv)
    report = check_page(as_url(args.url), screenshot=args.screenshot)
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
