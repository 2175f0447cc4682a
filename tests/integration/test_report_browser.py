"""report.html in a real browser (headless Chromium): every figure loads, no console or
resource error, nothing wider than the page. Skipped, with the reason, without chromium."""

import json
import re
import shutil
import subprocess

import pytest

from support.report_fixtures import fake_suite
from splitbench.report import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--hide-scrollbars",
]

# Injected first in <head>: record errors (script, resource, console.error) and, once the
# page has loaded, what a reader would see go wrong.
PROBE = """<script>
window.__errors = [];
window.addEventListener('error', e => window.__errors.push(e.message || ('failed to load ' + (e.target.src || e.target.href))), true);
const __ce = console.error; console.error = (...a) => { window.__errors.push(a.join(' ')); __ce(...a); };
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const wide = [...document.querySelectorAll('body *')].filter(el => el.getBoundingClientRect().right > window.innerWidth + 1
      && !el.closest('.scroll')).map(el => el.tagName + ' ' + (el.textContent || '').slice(0, 40));
  const out = {images: imgs.length, broken: imgs.filter(i => !i.complete || i.naturalWidth === 0).length,
               page: document.documentElement.scrollWidth, viewport: window.innerWidth,
               overflow: wide.slice(0, 5), errors: window.__errors};
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (Debian: apt-get install chromium)")
@pytest.mark.parametrize("width", [1280, 800])
def test_report_opens_cleanly_in_chromium(tmp_path, width):
    dirs = fake_suite(tmp_path / "runs" / "fake")
    out = tmp_path / "report"
    build_report(dirs, out, 0.7, title="fake suite")
    page = (out / "report.html").read_text()
    probe = out / "probe.html"
    probe.write_text(page.replace("<head>", "<head>" + PROBE, 1))
    r = subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--window-size={width},1000",
            "--virtual-time-budget=10000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    m = re.search(r"<pre id=\"probe\">(.*?)</pre>", r.stdout, re.S)
    assert m, f"no probe result; chromium said: {r.stderr[-2000:]}"
    result = json.loads(
        m.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    )
    assert result["images"] == 6 and result["broken"] == 0, result
    assert result["errors"] == [], result
    assert result["page"] <= result["viewport"], result
    assert result["overflow"] == [], result
