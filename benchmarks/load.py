"""Load benchmark: N concurrent `/inspect` clients against a local app, for a bounded time.

    python -m benchmarks.load --clients 3 --seconds 45 --out benchmarks/reports/load.json

Starts `app.py` in a child process on a free loopback port (127.0.0.1 only, offline), waits
until it answers, then runs `--clients` gradio_client clients in threads, each calling
`/inspect` on the embedded checkpoint's example images in turn until `--seconds` have passed or
`--max-requests` requests were sent in all. Prints and writes p50 / p95 latency, the number of
errors (should be 0) and the server's peak resident memory (VmHWM of the app process, which
also covers its start-up). Not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import itertools
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from benchmarks.common import REPOSITORY, status_mb, write_json

ROOT = REPOSITORY


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(port: int, threads: int) -> subprocess.Popen:
    env = {
        **os.environ,
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
    parser.add_argument("--out", help="JSON report path")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 16 or not 0 < args.seconds <= 600 or args.max_requests < 1:
        parser.error("--clients 1-16, --seconds up to 600, --max-requests at least 1")

    from gradio_client import Client, handle_file

    from ulsad.hub import WEIGHTS_DIR

    images = sorted((WEIGHTS_DIR / "bottle" / "examples").glob("*.png"))
    if not images:
        parser.error(f"no example images under {WEIGHTS_DIR / 'bottle' / 'examples'}")
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    process = start_app(port, args.threads)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    sent = itertools.count()
    rss_samples: list[float] = []
    try:
        startup_s = wait_until_up(url, process, args.startup_timeout)
        idle_rss = status_mb("VmRSS", process.pid)
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

        def sample_memory() -> None:
            while time.perf_counter() < deadline and process.poll() is None:
                value = status_mb("VmRSS", process.pid)
                if value is not None:
                    rss_samples.append(value)
                time.sleep(0.5)

        workers = [threading.Thread(target=client_loop, args=(i,)) for i in range(args.clients)]
        sampler = threading.Thread(target=sample_memory, daemon=True)
        started = time.perf_counter()
        sampler.start()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=args.seconds + 120)
        wall_s = time.perf_counter() - started
        peak = status_mb("VmHWM", process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
    report: dict[str, Any] = {
        "clients": args.clients,
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
        "server_rss_idle_mb": idle_rss,
        "server_rss_max_sampled_mb": max(rss_samples, default=None),
        "server_peak_rss_mb": peak,
        "machine": {"cpus": os.cpu_count(), "load_average_start": load_start},
    }
    print(
        f"{args.clients} clients, {wall_s:.0f} s: {len(latencies)} ok, {len(errors)} errors; "
        f"p50 {report['latency_p50_s'] or float('nan'):.3f} s, "
        f"p95 {report['latency_p95_s'] or float('nan'):.3f} s; "
        f"server peak RSS {peak or float('nan'):.0f} MiB (idle {idle_rss or float('nan'):.0f})"
    )
    write_json(args.out, report)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
