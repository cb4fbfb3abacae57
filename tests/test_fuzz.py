"""The libFuzzer harnesses (connector_c/fuzz/): every stored input replayed, then a short campaign.

`make fuzz` runs the same harnesses for longer. A crash found there is fixed, and its input kept in
connector_c/fuzz/regressions/, which this replays on every run.
"""

import os

import pytest

import fuzz  # tools/fuzz.py

SECONDS = int(os.environ.get("FUZZ_TEST_SECONDS", "20"))

pytestmark = pytest.mark.skipif(not all(fuzz.binary(n).exists() for n in fuzz.HARNESSES),
                                reason="fuzz harnesses not built (make fuzz-build needs clang)")


def test_every_stored_input_and_regression_runs_clean():
    for outcome in fuzz.replay(list(fuzz.HARNESSES)):
        assert outcome.ok, f"{outcome.name}:\n{outcome.log_tail}"
        assert outcome.runs > 0, f"{outcome.name} has no stored inputs"


def test_a_short_campaign_finds_nothing():
    for outcome in fuzz.campaign(list(fuzz.HARNESSES), SECONDS):
        assert outcome.ok, f"{outcome.name} failed; input kept at {outcome.artifacts}\n{outcome.log_tail}"
        assert outcome.runs > 1000, f"{outcome.name} hardly ran ({outcome.runs} runs)"
