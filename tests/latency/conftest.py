"""Shared fixtures of the latency tests."""

from __future__ import annotations

import pytest

from onnxmorph.graph.analysis import analyze
from tests.latency.fixtures import tiny_model


@pytest.fixture(scope="module")
def tiny_analysis():
    return analyze(tiny_model())
