"""Serving throughput and latency: `steward serve-model` beside the plain FastAPI app a user would write.

    .venv/bin/python bench/serving.py [--seconds 10] [--concurrency 1,8,32] [--json]

One MiniLM champion (`steward run` on 800 Kotzias Amazon sentences, pretraining off, one epoch) is served
three ways, each a uvicorn process on a free loopback port, one after the other on the same machine:

- `steward serve-model` with the prediction log on (the default) and off (`serving.log_predictions: false`);
  with the log on, both of its APIs are measured on the same process: `POST /v1/predict` and the Open
  Inference Protocol v2's `POST /v2/models/reviews/infer` (one BYTES tensor of one text, JSON outputs);
- a plain FastAPI app: `transformers.pipeline("text-classification")` in a sync endpoint (FastAPI runs it in
  its thread pool), the 15-line app a user writes. The pipeline cannot load Steward's mean-pooling head, so
  it serves the same encoder weights with a fresh classification head: its speed is comparable, its labels
  are not.

Each setting sends single-text requests (real Kotzias sentences, in a loop) from `concurrency` clients for
`--seconds`, and reports requests/s, p50 and p99 latency and failed requests. Timings on shared cores are
noisy, so read the ratios within one run. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
import yaml
from benchmarks import CITATION, DOMAIN_FILES, data_dir, progress, read_domain  # bench/benchmarks.py
from drift import table_rows, train_champion  # bench/drift.py: `steward run` on Amazon, as a user would

from steward.cli import QUIET_THIRD_PARTY_DEFAULTS

PLAIN_APP = textwrap.dedent('''
    import os
    from fastapi import FastAPI
    from transformers import pipeline

    classify = pipeline("text-classification", model=os.environ["PLAIN_MODEL"], device=-1)
    app = FastAPI()

    @app.post("/v1/predict")
    def predict(body: dict) -> dict:
        return {"predictions": classify(body["texts"])}
''')


Body = Callable[[str], dict]  # one text -> a request body


def v1_body(text: str) -> dict:
    return {"texts": [text]}


def v2_body(text: str) -> dict:
    return {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": [text]}]}


@dataclass(frozen=True)
class LoadResult:
    server: str
    concurrency: int
    requests: int
    failed: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running(command: list[str], port: int, env: dict[str, str], log: Path):
    """A server process until the block ends; waits for it to answer on `port`."""
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 180
            while True:
                if process.poll() is not None:
                    sys.exit(f"server exited: {' '.join(command)}\n{log.read_text()[-2000:]}")
                try:
                    httpx.post(f"http://127.0.0.1:{port}/v1/predict", json={"texts": ["warm up"]}, timeout=5)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        sys.exit(f"server did not start: {' '.join(command)}")
                    time.sleep(0.5)
            yield
        finally:
            process.terminate()
            process.wait(timeout=30)


async def load(url: str, body: Body, texts: list[str], concurrency: int, seconds: float) -> tuple[list[float], int]:
    """Latencies of the requests `concurrency` clients complete in `seconds`, and how many failed."""
    latencies: list[float] = []
    failed = 0
    stop_at = time.perf_counter() + seconds

    async def client(index: int, session: httpx.AsyncClient) -> None:
        nonlocal failed
        rng = random.Random(index)
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                response = await session.post(url, json=body(rng.choice(texts)))
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                failed += 1

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as session:
        await asyncio.gather(*(client(i, session) for i in range(concurrency)))
    return latencies, failed


def measure(name: str, port: int, texts: list[str], concurrencies: list[int], seconds: float,
            route: str = "/v1/predict", body: Body = v1_body) -> list[LoadResult]:
    results = []
    for concurrency in concurrencies:
        url = f"http://127.0.0.1:{port}{route}"
        latencies, failed = asyncio.run(load(url, body, texts, concurrency, seconds))
        milliseconds = np.array(latencies) * 1000
        result = LoadResult(name, concurrency, len(latencies), failed, len(latencies) / seconds,
                            float(np.percentile(milliseconds, 50)), float(np.percentile(milliseconds, 99)))
        progress(f"  {name} at concurrency {concurrency}: {result.requests_per_second:.1f} req/s, "
                 f"p50 {result.p50_ms:.0f} ms, p99 {result.p99_ms:.0f} ms, {failed} failed")
        results.append(result)
    return results


def steward_server(project: Path, log_predictions: bool, env: dict[str, str]) -> tuple[list[str], int, Path]:
    config = yaml.safe_load((project / "steward.yaml").read_text())
    config["serving"] = {"log_predictions": log_predictions}
    path = project / f"serve-{'logged' if log_predictions else 'unlogged'}.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    command = [sys.executable, "-m", "steward.cli", "serve-model", "--model", "reviews@champion", "--config",
               str(path), "--port", str(port)]
    return command, port, path.with_suffix(".log")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if not data_dir().is_dir():
        sys.exit(f"bench/serving.py: {data_dir()} not found (set STEWARD_SHARED_DATA to the shared data folder)")
    env = {**os.environ, **QUIET_THIRD_PARTY_DEFAULTS}
    os.environ.update(QUIET_THIRD_PARTY_DEFAULTS)
    concurrencies = [int(value) for value in args.concurrency.split(",")]
    texts = [text for name in DOMAIN_FILES for text in read_domain(name).texts if text]
    with tempfile.TemporaryDirectory(prefix="steward-serving-bench-") as tmp:
        project = Path(tmp) / "project"
        rows = table_rows(read_domain("amazon"))
        random.Random(0).shuffle(rows)
        champion = train_champion(project, "reviews", {"train": rows[:800], "test": rows[800:]}, {"epochs": 1}, env)
        results: list[LoadResult] = []
        for logged in (True, False):
            command, port, log = steward_server(project, logged, env)
            with running(command, port, env, log):
                results += measure(f"steward serve-model (log {'on' if logged else 'off'})", port, texts,
                                   concurrencies, args.seconds)
                if logged:  # the v2 protocol on the same process, so only the route differs
                    results += measure("steward serve-model v2 infer (log on)", port, texts, concurrencies,
                                       args.seconds, "/v2/models/reviews/infer", v2_body)
        app = Path(tmp) / "plain_app.py"
        app.write_text(PLAIN_APP)
        port = free_port()
        command = [sys.executable, "-m", "uvicorn", "plain_app:app", "--port", str(port), "--log-level", "warning",
                   "--app-dir", tmp]
        with running(command, port, {**env, "PLAIN_MODEL": str(champion.folder)}, Path(tmp) / "plain.log"):
            results += measure("plain FastAPI + pipeline", port, texts, concurrencies, args.seconds)
    report(results, args.json)


def report(results: list[LoadResult], as_json: bool) -> None:
    plain = {r.concurrency: r for r in results if r.server.startswith("plain")}
    ratios = {f"{r.server} / plain at {r.concurrency}": round(r.requests_per_second / plain[r.concurrency]
              .requests_per_second, 2) for r in results if not r.server.startswith("plain")}
    if as_json:
        print(json.dumps({"results": [asdict(r) for r in results], "throughput_ratios": ratios},
                         indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Single-text requests on 127.0.0.1 (same model weights, same machine, one run)")
    for column in ("server", "concurrency", "req/s", "p50 ms", "p99 ms", "failed"):
        table.add_column(column)
    for r in results:
        table.add_row(r.server, str(r.concurrency), f"{r.requests_per_second:.1f}", f"{r.p50_ms:.0f}",
                      f"{r.p99_ms:.0f}", str(r.failed))
    console = Console()
    console.print(table)
    for name, ratio in ratios.items():
        console.print(f"{name}: {ratio:.2f}×")
    console.print(f"Data: {CITATION}")


if __name__ == "__main__":
    main()
