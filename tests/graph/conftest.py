"""Shared settings for the graph-analysis tests (graph builders live in tests/onnx_builders)."""


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds (large weights)")
