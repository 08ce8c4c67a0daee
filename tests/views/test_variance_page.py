"""The proxy-task variance page: verdicts, the repeats table, the embedded plot, odd inputs.

The last test opens the page in headless Chromium (skipped without one) and checks the plot is
drawn with one trace per repeat.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from html.parser import HTMLParser

import pytest
from browser import Browser, find_chromium

from kfnas.search.proxy_stats import summarize
from kfnas.views.variance import variance_page

NAN = float("nan")
# Trial 3 zig-zags (smoothness 22, see tests/search/test_proxy_stats.py); finals 0.7, 0.5, 0.6.
CURVES = {
    1: ([100, 200, 300], [0.3, 0.5, 0.7]),
    2: ([100, 200, 300], [0.2, NAN, 0.5]),
    3: ([100, 200, 300], [0.4, 0.8, 0.6]),
}
_VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr"}


def page_curves(curves):
    return {str(t): {"steps": list(s), "values": list(v)} for t, (s, v) in curves.items()}


@pytest.fixture(scope="module")
def summary():
    return summarize("accuracy", CURVES, train_steps=300).to_dict()


@pytest.fixture(scope="module")
def page(summary):
    return variance_page(summary, page_curves(CURVES), title="Proxy variance of <demo>")


class _Structure(HTMLParser):
    """Checks that every element opened is closed in order; collects script elements."""

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.scripts: list[dict] = []

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self.scripts.append(dict(attrs))
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()


def structure(page):
    parser = _Structure()
    parser.feed(page)
    parser.close()
    return parser


def page_data(page):
    match = re.search(r'<script type="application/json" id="kfnas-data">(.*?)</script>', page)
    return json.loads(match.group(1))


def test_the_page_is_one_well_formed_document(page):
    assert page.startswith("<!DOCTYPE html>")
    parsed = structure(page)
    assert parsed.errors == [] and parsed.stack == []
    assert "<title>Proxy variance of &lt;demo&gt;</title>" in page
    assert "<h1>Proxy variance of &lt;demo&gt;</h1>" in page


def test_the_page_states_both_verdicts(summary, page):
    # Finals 0.7, 0.5, 0.6: mean 0.6, population std sqrt(0.02 / 3) = 0.0816, CV 0.136 (good).
    # Smoothness (0 + 0 + 22) / 3 = 7.33 (good).
    assert f"{summary['coefficient_of_variation']:.3f}" == "0.136"
    assert '<span class="value">0.136</span> (good at most 0.400;' in page
    assert '<span class="value">7.33</span> (good at most 10.00;' in page
    assert page.count('<span class="word">good</span>') == 2
    assert summary["variance_advice"] in page.replace("&#x27;", "'")
    assert summary["smoothness_advice"] in page


def test_bad_verdicts_say_too_high_with_their_advice():
    curves = {1: ([0, 50, 100], [0.5, 0.8, 1.0]), 2: ([0, 50, 100], [2.0, 4.0, 3.0])}
    summary = summarize("accuracy", curves, train_steps=100).to_dict()  # CV 0.5, smoothness 11
    page = variance_page(summary, page_curves(curves), title="bad")
    assert page.count('<span class="word">too high</span>') == 2
    assert 'class="verdict bad"' in page
    assert "vary too much between runs" in page and "zig-zags" in page


def test_a_row_per_repeat(page):
    rows = re.findall(r'<tr data-trial="(\d+)"><td>\d+</td><td>([^<]*)</td><td>([^<]*)</td>', page)
    assert rows == [("1", "0.7000", "0.00"), ("2", "0.5000", "0.00"), ("3", "0.6000", "22.00")]


def test_plotly_is_embedded_and_nothing_is_fetched(page):
    scripts = structure(page).scripts
    assert all("src" not in s for s in scripts)
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    packed = re.search(r'<script type="text/plain" id="kfnas-plotly">([^<]*)</script>', page)
    assert gzip.decompress(base64.b64decode(packed.group(1)))[:2000].strip()
    assert "Plotly.newPlot" in page


def test_the_page_data_holds_every_curve_nan_as_a_gap(page):
    data = page_data(page)
    assert data["metric"] == "accuracy"
    assert [c["trial"] for c in data["curves"]] == ["1", "2", "3"]
    assert data["curves"][1] == {"trial": "2", "steps": [100, 200, 300], "values": [0.2, None, 0.5]}


def test_degenerate_inputs_still_render():
    one = variance_page({}, {"5": {"steps": [10], "values": [0.5]}}, title="one curve")
    assert structure(one).errors == []
    assert one.count('<span class="word">not measured</span>') == 2
    assert 'data-trial="5"' in one and "not counted" in one
    empty = variance_page({}, {}, title="nothing")
    assert structure(empty).errors == []
    assert "No repeat finished" in empty and page_data(empty)["curves"] == []
    # A summary without trial ids takes the curves' order; int keys are accepted.
    summary = summarize("accuracy", CURVES, train_steps=300).to_dict()
    del summary["trial_ids"]
    page = variance_page(summary, {int(k): v for k, v in page_curves(CURVES).items()}, title="t")
    assert re.findall(r'<tr data-trial="(\d+)">', page) == ["1", "2", "3"]


@pytest.mark.skipif(find_chromium() is None, reason="no Chromium")
def test_the_plot_draws_in_a_browser(tmp_path, page):
    path = tmp_path / "variance.html"
    path.write_text(page)
    with Browser() as browser:
        assert browser.open(path.as_uri()) == "1"
        traces = browser.evaluate("document.getElementById('variance-curves').data.length")
        assert traces == 3 and not browser.errors
