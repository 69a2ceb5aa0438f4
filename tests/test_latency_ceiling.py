"""The latency table's "% of fp32 ceiling": only float rows are compared with numpy's fp32 matmul rate."""

from __future__ import annotations

import pytest

from benchmarks.latency import LatencyReport, LatencyRow, _add_ratios, latency_markdown


def _row(label: str, precision: str) -> LatencyRow:
    # 1 GMAC per slice in 2 ms: 500 GMAC/s, as the worker's timing would record it
    return LatencyRow(label, "artifact", "tflite", precision, "float", "litert", 1, median_ms=2.0, macs_per_slice=10**9,
                      gmacs_per_s=500.0)  # fmt: skip


def test_int8_rows_get_no_fraction_of_an_fp32_ceiling():
    ceiling = {1: {"gflops_best": 800.0, "gflops_median": 780.0, "gmacs_best": 400.0}}  # numpy fp32 matmul, 1 thread
    report = LatencyReport({}, [_row("m-tflite-fp32", "fp32"), _row("m-tflite-int8", "int8")], ceiling)
    _add_ratios(report)
    fp32, int8 = report.rows
    assert fp32.ceiling_fraction == pytest.approx(500.0 / 400.0)
    assert int8.ceiling_fraction is None  # 125 % of an fp32 rate would say nothing about int8 kernels
    table = latency_markdown(report)
    assert "% of fp32 ceiling" in table
    int8_line = next(line for line in table.splitlines() if line.startswith("| m-tflite-int8 |"))
    assert "125" not in int8_line
