"""`make test`'s last line: the skips of this run and their reasons (tests/skip_summary.py)."""

from __future__ import annotations

from skip_summary import skip_line

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase name="a"><skipped type="pytest.skip" message="shellcheck is not installed"/></testcase>
<testcase name="b"><skipped type="pytest.skip" message="shellcheck is not installed"/></testcase>
<testcase name="c"><skipped type="pytest.xfail" message="due later"/></testcase>
<testcase name="d"/></testsuite></testsuites>"""


def test_the_last_line_counts_skips_by_reason_and_leaves_out_xfails(tmp_path):
    junit = tmp_path / "run.xml"
    junit.write_text(JUNIT)
    assert skip_line(junit) == "make test: 2 skipped here: shellcheck is not installed (2)"


def test_nothing_skipped_or_no_report_prints_nothing(tmp_path):
    junit = tmp_path / "run.xml"
    junit.write_text(JUNIT.replace('type="pytest.skip"', 'type="pytest.xfail"'))
    assert skip_line(junit) == "" and skip_line(tmp_path / "missing.xml") == ""
