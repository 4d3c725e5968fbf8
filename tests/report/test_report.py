"""The report's structure: every kind of result found, nothing fetched, data escaped."""

import re

from typer.testing import CliRunner

from infscope.cli.main import app
from infscope.report import build_report
from tests.report.conftest import IMG, INJECTED


def test_report_has_a_section_per_result_and_nothing_external(run_dir, tmp_path):
    root, data = run_dir
    path = build_report(root, tmp_path / "report.html", data=[data])
    page = path.read_text(encoding="utf-8")
    for title in (
        "Audit: likely mislabeled examples",
        "Per-example scores: tracin",
        "Attribution: tracin",
        "Training dynamics: data map",
        "Pruning study",
        "Selection: top-k",
        "Mislabel detection: tracin",
    ):
        assert title in page
    # self-contained: every src is a data URI, no stylesheet or script is linked
    assert all(
        src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', page)
    )
    assert "<link" not in page and "http://" not in page and "https://" not in page
    # data is escaped: exactly one script element (the page's own), no injected markup
    assert page.count("<script") == 1
    assert INJECTED not in page and IMG not in page and "&lt;script&gt;" in page
    assert "&lt;b&gt;beta&lt;/b&gt;" in page  # class names are data too
    assert "infscope 0.1.0" in page
    # the audit on random probabilities says its evidence is weak, and how it ranked
    assert '<p class="warning"><b>warning:</b> weak evidence' in page
    assert "Ranking: noise concentration" in page


def test_report_command_writes_into_the_run_directory(run_dir):
    root, data = run_dir
    result = CliRunner().invoke(app, ["report", str(root), "--data", str(data), "--top", "2"])
    assert result.exit_code == 0, result.output
    assert (root / "report.html").is_file()
    missing = CliRunner().invoke(app, ["report", str(root / "nope")])
    assert missing.exit_code == 2 and "no such run directory" in missing.output
