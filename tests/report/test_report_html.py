"""`chaosext report`: a real journal of a lab run -> one self-contained HTML page with the plots, looked at in
headless Chromium as a person would."""
from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from chaosext.report.cli import report
from tests.nsutil import in_ns

pytestmark = [pytest.mark.e2e, pytest.mark.lab, pytest.mark.netns, pytest.mark.slow]


def _png_pixels(path: Path) -> tuple[int, int, set[bytes]]:
    """(width, height, distinct RGB colours of a sample) of an 8-bit RGB/RGBA PNG, with the stdlib only."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and ctype in (2, 6), f"unexpected PNG format depth={depth} colour type={ctype}"
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * bpp
    colours: set[bytes] = set()
    prev = bytearray(stride)
    for row in range(height):  # undo the PNG filters to read real pixels
        ftype, line = raw[row * (stride + 1)], bytearray(raw[row * (stride + 1) + 1:(row + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        if row % 7 == 0:
            colours.update(bytes(line[i:i + 3]) for i in range(0, stride, bpp * 5))
        prev = line
    return width, height, colours


def screenshot(html: Path, png: Path, profile: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        pytest.fail("chromium is not installed: run `bash scripts/setup` (Debian package chromium)")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={profile}", f"--screenshot={png}", "--window-size=1200,2400",
                    html.as_uri()], capture_output=True, timeout=90, check=False)
    assert png.exists(), "chromium wrote no screenshot"


@pytest.fixture(scope="module")
def rendered(module_netns: str, ns_lab: dict[str, Any], lab_journal: Path) -> dict[str, Any]:
    """The report of the lab run, rendered by the CLI inside the namespace while the lab's Prometheus still runs."""
    out = lab_journal.parent
    html, ranges = out / "report.html", out / "ranges.json"
    proc = in_ns(module_netns, ["chaosext", "report", str(lab_journal), "-o", str(html), "--save-ranges", str(ranges)],
                 env={"CHAOSEXT_LAB_DIR": ns_lab["state_dir"]})
    assert proc.returncode == 0, proc.stderr
    return {"html": html, "ranges": ranges, "stdout": proc.stdout, "stderr": proc.stderr, "journal": lab_journal}


def test_report_of_a_lab_run_shows_verdict_plots_and_probes(rendered: dict[str, Any]) -> None:
    text = rendered["html"].read_text(encoding="utf-8")
    journal = json.loads(rendered["journal"].read_text())
    assert rendered["stderr"] == "", f"report warned: {rendered['stderr']}"
    # the verdict is the verdict command's
    from chaosext.verdict import check_record, classify
    expected, _ = classify(journal, check_record(journal))
    assert f'class="verdict {"pass" if expected == "PASS" else "fail"}"' in text
    assert f"verdict: {expected}" in rendered["stdout"]
    # four plots with real PNG data (not "no data" notes)
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    titles = [t for t, _ in images]
    assert any("Error rate" in t for t in titles) and any("p95" in t for t in titles)
    assert any("JWKS cache state" in t for t in titles) and any("auth.degraded" in t for t in titles), titles
    for _title, data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    # every hypothesis probe appears with its tolerance verdict; every method activity in the timeline
    for phase in ("before", "after"):
        for probe in journal["steady_states"][phase]["probes"]:
            assert probe["activity"]["name"] in text
    for item in journal["run"]:
        assert item["activity"]["name"] in text
    assert "outage window" in text and "no fault action found" not in text


def test_report_is_self_contained(rendered: dict[str, Any]) -> None:
    text = rendered["html"].read_text(encoding="utf-8")
    assert "<script" not in text.lower()
    external = re.findall(r'(?:src|href)\s*=\s*"(?!data:|#)([^"]*)"', text) + re.findall(r"url\((?!data:)", text)
    assert external == [], f"external references: {external}"
    assert "@import" not in text


def test_report_reads_well_in_chromium(rendered: dict[str, Any], tmp_path: Path) -> None:
    png = tmp_path / "report.png"
    screenshot(rendered["html"], png, tmp_path / "profile")
    width, height, colours = _png_pixels(png)
    assert (width, height) == (1200, 2400)
    # a blank or failed page has a handful of colours; text, plots and the verdict banner have many
    assert len(colours) > 50, f"screenshot looks blank ({len(colours)} colours)"
    green, red = bytes((0x1F, 0x7A, 0x3F)), bytes((0xB3, 0x26, 0x1E))
    assert green in colours or red in colours, "the verdict banner is not visible"
    keep = Path(rendered["html"]).parent / "report.png"
    shutil.copy(png, keep)


def test_report_rerenders_offline_from_saved_ranges(rendered: dict[str, Any], tmp_path: Path) -> None:
    ranges = json.loads(rendered["ranges"].read_text())
    assert set(ranges) >= {"error_rate", "p95_latency", "jwks_cache_state"}
    assert any(series["values"] for series in ranges["error_rate"])
    out = tmp_path / "offline.html"
    result = CliRunner().invoke(report, [str(rendered["journal"]), "-o", str(out), "--ranges",
                                         str(rendered["ranges"]), "--prometheus-url", "http://127.0.0.1:9"])
    assert result.exit_code == 0, result.output
    assert out.read_text().count("data:image/png;base64,") >= 3


def test_report_draws_the_saved_evidence_after_prometheus_is_gone(lab_journal: Path, tmp_path: Path,
                                                                   unused_port: int) -> None:
    """The run saved the series it judged (judge-outage names the file): the report needs no Prometheus."""
    journal = json.loads(lab_journal.read_text())
    judge = next(r for r in journal["run"] if r["activity"]["name"] == "judge-outage")
    assert judge["output"]["evidence"]["ok"], judge["output"]["evidence"]
    out = tmp_path / "r.html"
    result = CliRunner().invoke(
        report, [str(lab_journal), "-o", str(out), "--prometheus-url", f"http://127.0.0.1:{unused_port}"])
    assert result.exit_code == 0, result.output
    assert out.read_text().count("data:image/png;base64,") >= 3 and "NO DATA" not in out.read_text()


def test_report_without_metrics_says_so(lab_journal: Path, tmp_path: Path, unused_port: int) -> None:
    journal = json.loads(lab_journal.read_text())
    for item in journal["run"]:
        if isinstance(item.get("output"), dict):
            item["output"].pop("evidence", None)  # as if the run directory was deleted
    stripped = tmp_path / "journal.json"
    stripped.write_text(json.dumps(journal))
    out = tmp_path / "r.html"
    result = CliRunner().invoke(
        report, [str(stripped), "-o", str(out), "--prometheus-url", f"http://127.0.0.1:{unused_port}"])
    assert result.exit_code == 0
    assert "Prometheus at" in result.stderr and "--ranges" in result.stderr
    assert "no data for this window" in out.read_text()


def test_report_rejects_a_file_that_is_not_a_journal(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text('{"hello": 1}')
    result = CliRunner().invoke(report, [str(bad), "-o", str(tmp_path / "r.html")])
    assert result.exit_code != 0 and "not a Chaos Toolkit journal" in result.output
    assert not (tmp_path / "r.html").exists()
