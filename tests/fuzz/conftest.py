"""The fuzz suite's summary (cases by outcome, failures by clause) at the end of pytest's report."""

from __future__ import annotations


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    from fuzz.test_fuzz import SUMMARY

    text = config.stash.get(SUMMARY, None)
    if text:
        terminalreporter.write_sep("-", "fuzz summary")
        for line in text.splitlines():
            terminalreporter.write_line(line)
