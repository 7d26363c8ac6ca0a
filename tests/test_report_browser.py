"""The HTML report of a real tiny run, opened in headless Chromium: its tables and plots render."""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ballast.pipeline import run_recipe
from ballast.recipe import load_recipe

pytestmark = pytest.mark.slow  # a whole (tiny) pipeline run on the real models, then the browser
TINY = Path(__file__).parent / "data" / "tiny_recipe.yaml"
# Smaller than the e2e run, with gate thresholds so the gate has checks to show.
OVERRIDES = [
    "generate.self_instruct.num_instructions=3",
    "generate.self_instruct.max_requests=4",
    "train.max_steps=1",
    "evaluate.max_examples=6",
    "evaluate.decoding.max_tokens=20",
    "gate.max_violation_rate=1.0",
    "gate.min_signoff=1.0",
]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "chromium is not installed: run `make browser` (make test does), which installs Debian's chromium package"
        )
    return path


@pytest.fixture(scope="module")
def report(chromium, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("browser") / "run"
    run_recipe(load_recipe(TINY, [f"run_dir={run_dir}", *OVERRIDES]))
    return run_dir / "report.html"


def _chromium(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


class _Page(HTMLParser):
    """Tables (rows of cell texts) and SVG plots (bar widths, path data) of a rendered DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.svgs: list[dict[str, list]] = []
        self.headings: list[str] = []
        self._cell: list[str] | None = None
        self._heading: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag in ("h2", "h3"):
            self._heading = []
        elif tag == "svg":
            self.svgs.append({"bars": [], "legend": [], "paths": []})
        elif tag == "rect" and self.svgs:
            self.svgs[-1]["bars" if a.get("height") == "12" else "legend"].append(float(a["width"]))
        elif tag == "path" and self.svgs:
            self.svgs[-1]["paths"].append(a.get("d") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag in ("h2", "h3") and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None

    def handle_data(self, data: str) -> None:
        for buffer in (self._cell, self._heading):
            if buffer is not None:
                buffer.append(data)


def _table(page: _Page, first_header: str) -> list[list[str]]:
    return next(t for t in page.tables if t and t[0] and t[0][0] == first_header)


def test_report_renders_its_tables_and_plots_in_chromium(chromium, report, tmp_path):
    dom = _chromium(chromium, tmp_path / "profile", "--dump-dom", report.as_uri()).stdout
    page = _Page()
    page.feed(dom)
    assert {"Release gate", "Models side by side", "Curation funnel", "Samples"} <= set(page.headings)

    comparison = _table(page, "metric")
    assert comparison[0] == ["metric", "base", "pilot", "curated"]
    violation = next(row for row in comparison if row[0] == "policy violation rate")
    # Every model's mean with its 95% interval and n, e.g. "0.45 [0.18, 0.73] n=11".
    assert all("[" in cell and "n=" in cell for cell in violation[1:]), violation

    funnel = _table(page, "stage")
    assert funnel[0] == ["stage", "kept", "dropped", "top drop reasons"]
    assert {"select"} <= {row[0] for row in funnel[1:]} and any(row[0].startswith("generate") for row in funnel)

    gate = _table(page, "check")
    assert gate[0] == ["check", "value", "limit", "result"] and len(gate) == 3
    assert {row[3] for row in gate[1:]} <= {"pass", "FAIL"}
    assert "sign-off rate" in {row[0] for row in gate[1:]}

    training = _table(page, "model")
    assert [row[0] for row in training[1:]] == ["curated", "pilot"] and all(int(row[3]) > 0 for row in training[1:])

    samples = _table(page, "slice")
    assert samples[0] == ["slice", "prompt", "base", "pilot", "curated", "reference"] and len(samples) > 2

    # Three plots: the per-slice violation bars (one bar and one CI whisker per model and slice), the funnel, and
    # the selection's slice coverage beside the pilot's.
    slices_plot, funnel_plot, coverage_plot = page.svgs
    assert len(coverage_plot["bars"]) >= 2 and max(coverage_plot["bars"]) > 0
    n_slices = len({row[0] for row in samples[1:]})  # the samples show two of every slice
    assert len(slices_plot["bars"]) == 3 * n_slices and len(slices_plot["paths"]) == 3 * n_slices
    assert max(slices_plot["bars"]) > 0 and all(d.startswith("M") for d in slices_plot["paths"])
    assert len(funnel_plot["bars"]) == 2 * (len(funnel) - 1) and max(funnel_plot["bars"]) > 0


def _png_rows(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and the filtered scanlines of an 8-bit RGB(A) PNG, read with zlib."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBB", chunk[:10])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, colour = header
    assert depth == 8 and colour in (2, 6), header
    stride = 1 + width * (3 if colour == 2 else 4)
    pixels = zlib.decompress(idat)
    assert len(pixels) == height * stride
    return width, height, [pixels[i * stride + 1 : (i + 1) * stride] for i in range(height)]


def test_report_screenshot_is_a_real_picture(chromium, report, tmp_path):
    shot = tmp_path / "shot.png"
    _chromium(chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,2000", report.as_uri())
    width, height, rows = _png_rows(shot)
    assert (width, height) == (1200, 2000)
    # A page of one colour filters down to a handful of distinct scanlines; text, tables and bars give hundreds.
    assert len(set(rows)) > 200
