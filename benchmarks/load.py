"""Load benchmark: N concurrent `/inspect` clients (and optionally one `/fit`) against a local
app, for a bounded time.

    python -m benchmarks.load --clients 16 --seconds 30 --fit --out benchmarks/reports/load.json

Starts `app.py` in a child process on a free loopback port (127.0.0.1 only, offline), with its
own empty gradio cache and temporary folder (so that the disk it writes can be measured), waits
until it answers, then runs `--clients` gradio_client clients in threads, each calling
`/inspect` on the embedded checkpoint's example images in turn until `--seconds` have passed or
`--max-requests` requests were sent in all; `--fit` also trains one model on 10 generated good
images meanwhile. Prints and writes, in one report: the clients, requests, errors (should be 0),
p50 / p95 latency, the server's RSS before and after the load (and its peak, VmHWM, which also
covers start-up), and the disk the app wrote (its cache and session folders: at the end and the
most seen). Not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import itertools
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPOSITORY, status_mb, write_json

ROOT = REPOSITORY


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (0 if it does not exist)."""
    from ulsad.app.disk import files

    return sum(size for _, size, _ in files([folder]))


def start_app(port: int, threads: int, scratch: Path, budget_mb: float | None) -> subprocess.Popen:
    env = {
        **os.environ,
        "GRADIO_TEMP_DIR": str(scratch / "gradio"),  # uploads and outputs
        "TMPDIR": str(scratch / "tmp"),  # session folders (fitted models, CSVs)
        **({"ULSAD_APP_DISK_BUDGET_MB": str(budget_mb)} if budget_mb else {}),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",
        "OMP_NUM_THREADS": str(threads),
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    return subprocess.Popen(
        [sys.executable, str(ROOT / "app.py")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until_up(url: str, process: subprocess.Popen, timeout: float) -> float:
    import httpx

    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited ({process.returncode}): {process.stderr.read()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the app did not answer within {timeout:.0f} s")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=45.0, help="time budget of the load")
    parser.add_argument("--max-requests", type=int, default=400, help="in all clients together")
    parser.add_argument("--threads", type=int, default=1, help="the app's torch threads")
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    parser.add_argument("--fit", action="store_true", help="one /fit (10 images) during the load")
    parser.add_argument("--fit-epochs", type=int, default=2)
    parser.add_argument(
        "--disk-budget-mb", type=float, help="the app's disk budget (default: its own)"
    )
    parser.add_argument("--out", help="JSON report path")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 64 or not 0 < args.seconds <= 600 or args.max_requests < 1:
        parser.error("--clients 1-64, --seconds up to 600, --max-requests at least 1")

    from gradio_client import Client, handle_file

    from ulsad.hub import WEIGHTS_DIR

    images = sorted((WEIGHTS_DIR / "bottle" / "examples").glob("*.png"))
    if not images:
        parser.error(f"no example images under {WEIGHTS_DIR / 'bottle' / 'examples'}")
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    scratch_dir = tempfile.TemporaryDirectory(prefix="ulsad-load-")
    scratch = Path(scratch_dir.name)
    for name in ("gradio", "tmp"):
        (scratch / name).mkdir()
    process = start_app(port, args.threads, scratch, args.disk_budget_mb)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    sent = itertools.count()
    rss_samples: list[float] = []
    disk_samples: list[int] = []
    fit_result: dict[str, Any] = {}
    try:
        startup_s = wait_until_up(url, process, args.startup_timeout)
        idle_rss = status_mb("VmRSS", process.pid)
        disk_before = folder_bytes(scratch)
        deadline = time.perf_counter() + args.seconds

        def client_loop(index: int) -> None:
            client = Client(url, verbose=False, analytics_enabled=False)
            for i in itertools.count(index):
                if time.perf_counter() >= deadline or next(sent) >= args.max_requests:
                    return
                image = handle_file(str(images[i % len(images)]))
                start = time.perf_counter()
                try:
                    client.predict(image, api_name="/inspect")
                    with lock:
                        latencies.append(time.perf_counter() - start)
                except Exception as error:  # counted and reported: the benchmark's point
                    with lock:
                        errors.append(f"{type(error).__name__}: {str(error)[:200]}")

        def fit_once() -> None:
            from PIL import Image

            folder = scratch / "fit-images"
            folder.mkdir()
            paths = []
            for i in range(10):
                paths.append(folder / f"good_{i}.png")
                Image.open(images[i % len(images)]).resize((160, 160)).save(paths[-1])
            client = Client(url, verbose=False, analytics_enabled=False)
            start = time.perf_counter()
            try:
                status = client.predict([handle_file(str(p)) for p in paths], args.fit_epochs,
                                        False, api_name="/fit")[0]  # fmt: skip
                fit_result.update(ok=True, status=str(status)[:200])
            except Exception as error:
                fit_result.update(ok=False, error=f"{type(error).__name__}: {str(error)[:200]}")
            fit_result["seconds"] = time.perf_counter() - start

        def sample() -> None:
            while not stop_sampling.is_set() and process.poll() is None:
                value = status_mb("VmRSS", process.pid)
                if value is not None:
                    rss_samples.append(value)
                disk_samples.append(
                    folder_bytes(scratch / "gradio") + folder_bytes(scratch / "tmp")
                )
                time.sleep(0.5)

        stop_sampling = threading.Event()
        workers = [threading.Thread(target=client_loop, args=(i,)) for i in range(args.clients)]
        if args.fit:
            workers.append(threading.Thread(target=fit_once))
        sampler = threading.Thread(target=sample, daemon=True)
        started = time.perf_counter()
        sampler.start()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=args.seconds + 120)
        wall_s = time.perf_counter() - started
        time.sleep(2.0)  # let the last responses' memory settle
        stop_sampling.set()
        after_rss = status_mb("VmRSS", process.pid)
        peak = status_mb("VmHWM", process.pid)
        disk_after = folder_bytes(scratch / "gradio") + folder_bytes(scratch / "tmp")
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        scratch_dir.cleanup()
    mb = 2**20
    report: dict[str, Any] = {
        "clients": args.clients,
        "fit": fit_result or None,
        "seconds_budget": args.seconds,
        "max_requests": args.max_requests,
        "app_threads": args.threads,
        "startup_s": startup_s,
        "wall_s": wall_s,
        "requests_ok": len(latencies),
        "errors": len(errors),
        "error_examples": errors[:5],
        "throughput_per_s": len(latencies) / wall_s if wall_s else None,
        "latency_p50_s": percentile(latencies, 0.50),
        "latency_p95_s": percentile(latencies, 0.95),
        "latency_mean_s": statistics.fmean(latencies) if latencies else None,
        "requests_sent": len(latencies) + len(errors),
        "server_rss_idle_mb": idle_rss,
        "server_rss_before_mb": idle_rss,
        "server_rss_after_mb": after_rss,
        "server_rss_max_sampled_mb": max(rss_samples, default=None),
        "server_peak_rss_mb": peak,
        "disk_before_mb": disk_before / mb,
        "disk_written_mb": (disk_after - disk_before) / mb,
        "disk_max_seen_mb": max(disk_samples, default=0) / mb,
        "disk_budget_mb": args.disk_budget_mb,
        "machine": {"cpus": os.cpu_count(), "load_average_start": load_start},
    }
    nan = float("nan")
    fit_text = ""
    if fit_result:
        fit_text = (
            f"; fit {'ok' if fit_result.get('ok') else 'FAILED'} in {fit_result['seconds']:.0f} s"
        )
    print(
        f"{args.clients} clients, {wall_s:.0f} s: {len(latencies) + len(errors)} requests, "
        f"{len(latencies)} ok, {len(errors)} errors; "
        f"p50 {report['latency_p50_s'] or nan:.3f} s, p95 {report['latency_p95_s'] or nan:.3f} s; "
        f"server RSS {idle_rss or nan:.0f} -> {after_rss or nan:.0f} MiB (peak {peak or nan:.0f}); "
        f"disk written {report['disk_written_mb']:.1f} MiB (most seen "
        f"{report['disk_max_seen_mb']:.1f}){fit_text}"
    )
    write_json(args.out, report)
    return 0 if not errors and fit_result.get("ok", True) else 1


if __name__ == "__main__":
    sys.exit(main())
