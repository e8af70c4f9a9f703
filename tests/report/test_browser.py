"""Open a rendered report in headless Chromium: figures load, hostile model output stays inert text.

The set-up installs Debian's ``chromium`` with apt-get when it is missing, and skips (saying why)
only when that cannot be done. Two pages are opened: the report as written (with its CSP), and a
probe copy without the CSP plus one script of ours that records, after the load event, each
image's decoded width and whether any payload ran. The probe proves that escaping alone keeps
the payloads inert; the CSP is a second wall, not the first.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from iaa_eval.report import render_report
from tests.runfixture import XSS_IMG, XSS_SCRIPT, make_run

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images).map(i => [i.getAttribute("src"), i.naturalWidth]);
  document.body.setAttribute("data-probe", JSON.stringify({imgs: imgs, pwned: window.__pwned || 0}));
});
</script>"""


def _install_chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("chromium is not installed and apt-get cannot be run here (not root or no apt-get)")
    for args in (["apt-get", "install", "-y", "chromium"], ["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(args, capture_output=True, text=True, timeout=900,
                              env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, check=False)
        if args[1] == "install" and done.returncode == 0:
            break
    found = shutil.which("chromium")
    if not found:
        pytest.skip(f"could not install chromium with apt-get: {done.stderr.strip()[-300:]}")
    return found


@pytest.fixture(scope="module")
def chromium() -> str:
    return _install_chromium()


def _browse(chromium: str, page: Path, profile: Path, *extra: str) -> str:
    done = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class _Dom(HTMLParser):
    """Element counts, responses' text and the probe attribute of a dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts = 0
        self.imgs: list[dict[str, str]] = []
        self.responses: list[str] = []
        self.probe: str | None = None
        self._in_response = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.scripts += tag == "script"
        if tag == "img":
            self.imgs.append(a)
        if tag == "body" and "data-probe" in a:
            self.probe = a["data-probe"]
        self._in_response = tag == "pre" and "response" in a.get("class", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre":
            self._in_response = False

    def handle_data(self, data: str) -> None:
        if self._in_response:
            self.responses.append(data)


def _dom(text: str) -> _Dom:
    dom = _Dom()
    dom.feed(text)
    return dom


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    return render_report(make_run(root / "run", seed=8, payload=True), root / "report", resamples=1000)


def test_report_renders_payloads_as_text(chromium: str, page: Path, tmp_path: Path) -> None:
    dom = _dom(_browse(chromium, page, tmp_path / "profile", "--dump-dom"))
    assert dom.scripts == 0
    assert XSS_SCRIPT in dom.responses and XSS_IMG in dom.responses  # shown verbatim, as text
    assert not [i for i in dom.imgs if "onerror" in i]
    figures = [i["src"] for i in dom.imgs]
    assert len(figures) == 3 and all((page.parent / src).is_file() for src in figures)


def test_probe_without_csp_figures_load_and_nothing_runs(chromium: str, page: Path, tmp_path: Path) -> None:
    html = page.read_text(encoding="utf-8")
    html, removed = re.subn(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", html)
    assert removed == 1
    probe = page.with_name("probe.html")
    probe.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = _dom(_browse(chromium, probe, tmp_path / "profile", "--virtual-time-budget=5000", "--dump-dom"))
    assert dom.probe, "the probe script did not run"
    result = json.loads(dom.probe)
    assert result["pwned"] == 0  # neither the <script> nor the onerror payload executed
    assert len(result["imgs"]) == 3 and all(width > 100 for _, width in result["imgs"]), result["imgs"]


def test_screenshot_is_not_blank(chromium: str, page: Path, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "shot.png"
    _browse(chromium, page, tmp_path / "profile", "--window-size=1280,2000", f"--screenshot={shot}")
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000)
    small = image.resize((320, 500))
    colours = small.getcolors(maxcolors=320 * 500)
    non_white = sum(n for n, c in colours if sum(c) < 720)
    assert len(colours) > 50 and non_white > 0.05 * 320 * 500
    # the figures' series colours (LLaVA red, IAA blue) are on screen, so the SVGs were painted
    assert any(r > 180 and g < 80 and b < 80 for _, (r, g, b) in colours)
    assert any(r < 60 and 90 < g < 150 and b > 150 for _, (r, g, b) in colours)


def test_probe_detects_a_payload_that_runs(chromium: str, tmp_path: Path) -> None:
    """Control: the same probe on an unescaped page does see the payloads run."""
    raw = tmp_path / "raw.html"
    raw.write_text(f"<!DOCTYPE html><html><body><pre>{XSS_SCRIPT}</pre><pre>{XSS_IMG}</pre>{PROBE}</body></html>")
    dom = _dom(_browse(chromium, raw, tmp_path / "profile", "--virtual-time-budget=5000", "--dump-dom"))
    assert dom.probe and json.loads(dom.probe)["pwned"] in (1, 2)
