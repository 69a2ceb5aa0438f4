"""Benchmark of `edge-seg serve` with real DICOM peers on 127.0.0.1 (the numbers of issue 14).

    python -m benchmarks.node_bench --out benchmarks/results/node

1. latency: 15-slice studies sent one after another by dcmtk `storescu`; per study the time from
   the node storing the last instance to the SEG file appearing at dcmtk `storescp`, minus the
   quiet time, with the node's CPU seconds for the study and its resident memory (VmRSS);
2. load: 20 studies of 15 slices from 4 concurrent `storescu` processes; throughput, p50/p95
   latency, and a check that every study arrives once with a SEG referencing all its slices;
3. faults at full size: the PACS down for 30 s; SIGKILL during receive and during processing.

Writes node_bench.json and node_bench.md to --out; exit 1 when a correctness check fails
(times are reported, never asserted).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.node_peers import (
    NodeProcess,
    StoreSCP,
    StudyFiles,
    make_study,
    missing_tools,
    pynetdicom_send,
    running,
    seg_references,
    storescu,
    wait_for,
)


def _ts(record: dict[str, Any]) -> float:
    return datetime.strptime(record["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


class SegWatcher:
    """Polls the storescp folder every 5 ms and notes when each SEG (by referenced series) first appears."""

    def __init__(self, pacs: StoreSCP) -> None:
        self.pacs = pacs
        self.seen: dict[str, float] = {}
        self.segs: dict[str, list[set[str]]] = {}
        self._known: set[Path] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> SegWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        import pydicom

        while not self._stop.wait(0.005):
            for path in self.pacs.received():
                if path in self._known:
                    continue
                now = time.time()
                try:
                    ds = pydicom.dcmread(path, stop_before_pixels=True)
                except Exception:  # still being written: next poll
                    continue
                self._known.add(path)
                if str(ds.Modality) != "SEG":
                    continue
                series = str(ds.ReferencedSeriesSequence[0].SeriesInstanceUID)
                self.seen.setdefault(series, now)
                self.segs.setdefault(series, []).append(seg_references(ds))


def _last_instance(node: NodeProcess, study: StudyFiles) -> float:
    stored = [e for e in node.events("instance_stored") if e["series"] == study.series_uid]
    return max(_ts(e) for e in stored)


def bench_latency(root: Path, studies: int, quiet: float) -> dict[str, Any]:
    pacs = StoreSCP(root / "pacs").start()
    node = NodeProcess(root / "spool", root / "out", root / "node.log",
                       args=["--send", pacs.destination, "--quiet-seconds", str(quiet)])
    rows = []
    with running(node, pacs), SegWatcher(pacs) as watcher:
        node.start()
        rss_start = node.rss_kb()
        for i in range(studies):
            study = make_study(root / f"latency{i}", 15, patient=f"LAT{i:03d}")
            cpu0 = _cpu_seconds(node.process.pid)
            assert storescu(study.files, node.port).returncode == 0
            wait_for(lambda s=study: s.series_uid in watcher.seen, 180, "the SEG at storescp")
            node.wait_event("job_delivered", count=i + 1, timeout=60)
            done = next(e for e in node.events("job_done") if e["series"] == study.series_uid)
            sent = next(e for e in node.events("send_ok") if e["job"] == done["job"])
            complete = next(e for e in node.events("series_complete") if e["series"] == study.series_uid)
            last = _last_instance(node, study)
            rows.append({
                "study": i + 1,
                "latency_minus_quiet_s": round(watcher.seen[study.series_uid] - last - quiet, 3),
                "quiet_wait_s": round(_ts(complete) - last, 3),
                "job_s": done["seconds"],
                "send_s": sent["seconds"],
                "node_cpu_s": round(_cpu_seconds(node.process.pid) - cpu0, 3),
                "rss_mb": round(node.rss_kb() / 1024, 1),
                "seg_references_all": watcher.segs[study.series_uid][0] == set(study.sop_uids),
            })
            time.sleep(1.0)
        node.terminate()
    latencies = [r["latency_minus_quiet_s"] for r in rows]
    return {
        "studies": rows,
        "quiet_seconds": quiet,
        "rss_mb_after_start": round(rss_start / 1024, 1),
        "rss_mb_max": max(r["rss_mb"] for r in rows),
        "latency_minus_quiet_s": {"first": latencies[0], "median": statistics.median(latencies),
                                  "median_after_first": statistics.median(latencies[1:] or latencies),
                                  "max": max(latencies)},
        "ok": all(r["seg_references_all"] for r in rows),
    }


def bench_load(root: Path, studies: int, senders: int, quiet: float) -> dict[str, Any]:
    pacs = StoreSCP(root / "pacs").start()
    node = NodeProcess(root / "spool", root / "out", root / "node.log",
                       args=["--send", pacs.destination, "--quiet-seconds", str(quiet)])
    made = [make_study(root / f"load{i:02d}", 15, patient=f"LOAD{i:03d}") for i in range(studies)]
    with running(node, pacs), SegWatcher(pacs) as watcher:
        node.start()
        started = time.time()

        def sender(k: int) -> list[int]:
            return [storescu(s.files, node.port, timeout=300).returncode for s in made[k::senders]]

        with ThreadPoolExecutor(senders) as pool:
            codes = [c for result in pool.map(sender, range(senders)) for c in result]
        wait_for(lambda: len(watcher.seen) >= studies, 900, f"{studies} SEGs at storescp", 0.1)
        node.wait_event("job_delivered", count=studies, timeout=120)
        time.sleep(3.0)  # a duplicate would show up here
        rss = node.rss_kb()
        node.terminate()
        segs_received = sum(len(v) for v in watcher.segs.values())
    lat = [watcher.seen[s.series_uid] - _last_instance(node, s) - quiet for s in made if s.series_uid in watcher.seen]
    first_instance = min(_ts(e) for e in node.events("instance_stored"))
    span = max(watcher.seen.values()) - first_instance
    complete = all(watcher.segs.get(s.series_uid, [set()])[0] == set(s.sop_uids) for s in made)
    return {
        "studies": studies, "slices_per_study": 15, "concurrent_storescu": senders,
        "storescu_exit_codes": sorted(set(codes)),
        "seg_received": segs_received, "distinct_series_with_seg": len(watcher.seen),
        "every_seg_references_all_slices": complete,
        "jobs_started": len(node.events("job_started")),
        "span_s": round(span, 2), "wall_since_first_association_s": round(max(watcher.seen.values()) - started, 2),
        "throughput_studies_per_min": round(60 * studies / span, 2),
        "latency_minus_quiet_s": {"p50": round(_percentile(lat, 0.5), 3), "p95": round(_percentile(lat, 0.95), 3),
                                  "max": round(max(lat), 3)},
        "rss_mb_after_load": round(rss / 1024, 1),
        "ok": segs_received == studies and len(watcher.seen) == studies and complete and set(codes) == {0},
    }


def bench_outage(root: Path, down_s: float, quiet: float) -> dict[str, Any]:
    pacs = StoreSCP(root / "pacs")
    node = NodeProcess(root / "spool", root / "out", root / "node.log",
                       args=["--send", pacs.destination, "--quiet-seconds", str(quiet)])
    study = make_study(root / "study", 15)
    with running(node, pacs):
        node.start()
        down_since = time.time()
        assert storescu(study.files, node.port).returncode == 0
        node.wait_event("job_done", timeout=120)
        time.sleep(max(0.0, down_s - (time.time() - down_since)))
        pacs.start()
        up = time.time()
        delivered = node.wait_event("job_delivered", timeout=120)[0]
        time.sleep(3.0)
        received = pacs.received_by_class()
        node.terminate()
    failures = node.events("send_failed")
    return {
        "down_s": round(up - down_since, 1), "send_failures": len(failures),
        "retry_delays_s": [f["retry_in_s"] for f in failures],
        "delivered_after_up_s": round(_ts(delivered) - up, 2),
        "seg_received": len(received.get("SEG", [])), "sr_received": len(received.get("SR", [])),
        "ok": len(received.get("SEG", [])) == 1 and len(received.get("SR", [])) == 1
        and seg_references(received["SEG"][0]) == set(study.sop_uids),
    }


def bench_kills(root: Path, quiet: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for case in ("receive", "processing"):
        folder = root / case
        pacs = StoreSCP(folder / "pacs").start()
        node = NodeProcess(folder / "spool", folder / "out", folder / "node.log",
                           args=["--send", pacs.destination, "--quiet-seconds", str(quiet)])
        study = make_study(folder / "study", 15)
        with running(node, pacs):
            node.start()
            if case == "receive":
                with contextlib.suppress(Exception):
                    pynetdicom_send(study.files[:7], node.port, before_end=node.kill)
                acknowledged = len(node.events("instance_stored"))
                node.start()
                assert storescu(study.files[7:], node.port).returncode == 0
            else:
                assert storescu(study.files, node.port).returncode == 0
                node.wait_event("job_started", timeout=60)
                node.kill()
                acknowledged = len(node.events("instance_stored"))
                node.start()
            node.wait_event("job_delivered", timeout=180)
            time.sleep(3.0)
            segs = pacs.received_by_class().get("SEG", [])
            node.terminate()
        out[case] = {
            "acknowledged_before_kill": acknowledged, "recovered": node.events("recovered")[-1],
            "seg_received": len(segs), "seg_references_all_15": bool(segs) and seg_references(segs[0]) == set(study.sop_uids),
            "ok": len(segs) == 1 and seg_references(segs[0]) == set(study.sop_uids),
        }
    return out


def markdown(results: dict[str, Any]) -> str:
    lat, load, outage = results["latency"], results["load"], results["outage"]
    lines = [
        "# edge-seg serve benchmark", "",
        f"Machine: {results['machine']}; load average at start {results['loadavg_start']}, at end {results['loadavg_end']}.",
        "", "## Latency (15-slice study, storescu -> node -> storescp)", "",
        f"Quiet time {lat['quiet_seconds']} s. Latency = SEG file at storescp - last instance stored by the node - quiet time.",
        "", "| study | latency - quiet (s) | quiet wait (s) | job (s) | send (s) | node CPU (s) | RSS (MB) | SEG refs all |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in lat["studies"]:
        lines.append(f"| {r['study']} | {r['latency_minus_quiet_s']:.3f} | {r['quiet_wait_s']:.3f} | {r['job_s']:.3f} | "
                     f"{r['send_s']:.3f} | {r['node_cpu_s']:.3f} | {r['rss_mb']:.1f} | {r['seg_references_all']} |")
    s = lat["latency_minus_quiet_s"]
    lines += [
        "", f"Median {s['median']:.3f} s (after the first study {s['median_after_first']:.3f} s), max {s['max']:.3f} s; "
        f"RSS after start {lat['rss_mb_after_start']} MB, max {lat['rss_mb_max']} MB.",
        "", "## Load (20 studies x 15 slices, 4 concurrent storescu)", "",
        f"SEGs received {load['seg_received']} for {load['distinct_series_with_seg']} distinct series of {load['studies']}; "
        f"every SEG references all its slices: {load['every_seg_references_all_slices']}; jobs started {load['jobs_started']}.",
        f"Throughput {load['throughput_studies_per_min']} studies/min over {load['span_s']} s (first instance to last SEG); "
        f"latency - quiet p50 {load['latency_minus_quiet_s']['p50']} s, p95 {load['latency_minus_quiet_s']['p95']} s, "
        f"max {load['latency_minus_quiet_s']['max']} s; RSS after the load {load['rss_mb_after_load']} MB.",
        "", "## Faults", "",
        f"- PACS down {outage['down_s']} s: {outage['send_failures']} failed attempts "
        f"(retry delays {outage['retry_delays_s']} s), "
        f"delivered {outage['delivered_after_up_s']} s after it came back; SEG received {outage['seg_received']}, "
        f"SR {outage['sr_received']}.",
    ]
    for case, r in results["kills"].items():
        lines.append(f"- SIGKILL during {case}: {r['acknowledged_before_kill']} instances acknowledged before the kill; "
                     f"after restart SEG received {r['seg_received']}, references all 15 slices: {r['seg_references_all_15']}.")
    lines += ["", f"All correctness checks passed: {results['ok']}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/node"))
    parser.add_argument("--latency-studies", type=int, default=6)
    parser.add_argument("--load-studies", type=int, default=20)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--quiet", type=float, default=5.0)
    parser.add_argument("--outage", type=float, default=30.0)
    parser.add_argument("--skip", default="", help="comma list of parts to leave out: latency,load,outage,kills")
    args = parser.parse_args(argv)
    if missing_tools():
        print(f"dcmtk tools missing: {missing_tools()} (apt-get install dcmtk)", file=sys.stderr)
        return 2
    skip = set(filter(None, args.skip.split(",")))
    results: dict[str, Any] = {"machine": f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}",
                               "loadavg_start": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="node-bench-") as tmp:
        root = Path(tmp)
        parts = {
            "latency": lambda: bench_latency(root / "latency", args.latency_studies, args.quiet),
            "load": lambda: bench_load(root / "load", args.load_studies, args.senders, args.quiet),
            "outage": lambda: bench_outage(root / "outage", args.outage, args.quiet),
            "kills": lambda: bench_kills(root / "kills", args.quiet),
        }
        for name, part in parts.items():
            if name in skip:
                continue
            t0 = time.time()
            results[name] = part()
            print(f"{name}: {time.time() - t0:.0f} s", file=sys.stderr)
    results["loadavg_end"] = os.getloadavg()
    oks = [results[n]["ok"] for n in ("latency", "load", "outage") if n in results]
    oks += [r["ok"] for r in results.get("kills", {}).values()]
    results["ok"] = all(oks)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "node_bench.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    if not skip:
        (args.out / "node_bench.md").write_text(markdown(results))
    print(json.dumps(results, indent=2, default=str))
    return 0 if results["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
