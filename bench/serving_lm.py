"""Generation serving throughput: `steward serve-model` (OpenAI-compatible) beside the plain FastAPI app a user writes.

    .venv/bin/python bench/serving_lm.py [--base smollm2|DIR] [--clients 8] [--requests 4] [--max-tokens 32] [--json]

One causal-LM champion is served two ways, each a uvicorn process on a free loopback port, one after the other in
the same run of this script, on the same machine:

- `steward`: `steward serve-model --model lm@champion --config CFG` (defaults: prediction log on, no token),
  `POST /v1/completions`; concurrent non-streamed requests with the same sampling share one `generate` call;
- `plain`: a FastAPI app with one `transformers.pipeline("text-generation", model=FOLDER)` called per request in a
  sync endpoint (FastAPI runs it in its thread pool), greedy, `return_full_text=False`: the app a user writes.

The champion: a causal-lm project (`base_model: --base`, default the packaged SmolLM2-135M-Instruct) whose corpus
is 150 docstrings of this Python's standard library (`steward.demo.python_docs`), trained by `steward run` for ONE
LoRA step (batch 2, 32 tokens), with a lenient gate (`min_perplexity_gain: 0`, `max_forgetting: 100`): a version
that barely differs from its base, which is fine, since serving speed is measured, not quality. Should the gate
still refuse it, `steward registry promote` makes it the champion (the run's output says which happened). The plain
app serves the same weights: the version loaded as Steward loads it (`tasks.language_model.load_causal_lm`: the
adapter merged into its verified base, fp32) and saved with its tokenizer into a folder.

Load: `--clients` concurrent clients (keep-alive connections), each sending `--requests` requests one after the
other (bounded load, not a time window); every request has its own short prompt (the first line of another
standard-library docstring, never one of the corpus) and asks for `max_tokens` tokens greedily (`temperature: 0`).
Each server first answers one warm-up request outside the measurement. Reported per server: tokens/s (completion
tokens ÷ wall seconds of the load phase; both servers' completions are counted the same way, re-tokenized with the
model's tokenizer without special tokens, so an end-of-text token is not counted; Steward's own `usage` count,
which counts it, is shown beside), requests/s, p50/p95 latency, failed requests, Steward's prompts per generate
call (from its /metrics), and the ratio steward/plain. Both sides are greedy on the same weights, so their texts
should agree; how many do is reported (left-padded batches can flip a near-tie now and then).

Timings on a shared machine (2 cores here) are noisy: both sides run in one process run, one after the other, so
read the ratio within a run, not figures across runs. Steward runs on the device it picks (CUDA with bf16 autocast
when there is one, else CPU in fp32); the plain pipeline is given the same device, in fp32. Traffic goes to
127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import textwrap
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import numpy as np
import yaml
from benchmarks import progress  # bench/benchmarks.py
from drift import steward  # bench/drift.py: the command line as a user runs it, its JSON
from serving import free_port, running  # bench/serving.py: a uvicorn process on a loopback port

from steward.cli import QUIET_THIRD_PARTY_DEFAULTS

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

NAME = "lm"
CORPUS_DOCUMENTS = 150
DOCUMENT_CHARS = (200, 1500)  # corpus documents of this length: short evaluation windows, no over-long text
PROMPT_CHARS = 60

PLAIN_APP = textwrap.dedent('''
    import os
    from fastapi import FastAPI
    from transformers import pipeline

    generator = pipeline("text-generation", model=os.environ["PLAIN_MODEL"], device=os.environ["PLAIN_DEVICE"])
    app = FastAPI()

    @app.post("/v1/completions")
    def complete(body: dict) -> dict:
        out = generator(body["prompt"], max_new_tokens=body["max_tokens"], do_sample=False, return_full_text=False)
        return {"text": out[0]["generated_text"]}
''')


@dataclass(frozen=True)
class Answer:
    prompt: str
    text: str
    seconds: float
    usage_tokens: int | None  # the server's own count, where it gives one (Steward's `usage`)


@dataclass(frozen=True)
class ServingResult:
    server: str
    clients: int
    requests: int
    failed: int
    wall_seconds: float
    completion_tokens: int  # the answers re-tokenized with the model's tokenizer (no special tokens)
    usage_completion_tokens: int | None  # Steward's usage count (end-of-text token included)
    tokens_per_second: float
    requests_per_second: float
    p50_ms: float
    p95_ms: float
    prompts_per_generate_call: float | None  # Steward's /metrics: steward_batch_texts sum / count


def corpus_and_prompts(count: int) -> tuple[list[str], list[str]]:
    """The corpus (docstrings of 200-1500 characters, the first 150 by name) and `count` short prompts: the first
    lines of the docstrings after those, cut at a word, each different."""
    from steward.demo.python_docs import docstrings

    texts = list(docstrings().values())
    corpus = [text for text in texts if DOCUMENT_CHARS[0] <= len(text) <= DOCUMENT_CHARS[1]][:CORPUS_DOCUMENTS]
    used = set(corpus)
    prompts: list[str] = []
    for text in texts:
        if text in used:
            continue
        line = text.splitlines()[0].strip()
        if len(line) > PROMPT_CHARS:
            line = line[:PROMPT_CHARS].rsplit(" ", 1)[0]
        if len(line) >= 15 and line not in prompts:
            prompts.append(line)
        if len(prompts) == count:
            return corpus, prompts
    sys.exit(f"bench/serving_lm.py: only {len(prompts)} distinct prompts, {count} needed")


def register_champion(project: Path, base: str, corpus: list[str], env: dict[str, str]) -> tuple[Path, Path, str]:
    """`steward run` (one LoRA step) on the corpus; promote the version if the gate refused it. Returns the config,
    the version's folder and what happened."""
    folder = project / "corpus"
    folder.mkdir(parents=True)
    for index, text in enumerate(corpus):
        (folder / f"doc-{index:03d}.txt").write_text(text + "\n", encoding="utf-8")
    config = {
        "name": NAME, "task": "causal-lm", "base_model": base, "seed": 13,
        "data": {"domain_corpus": "corpus"},
        "validation": {"min_rows": 20, "min_tokens": 100},
        "pretraining": {"method": "lora", "max_steps": 1, "batch_size": 2, "max_seq_length": 32},
        "evaluation": {"min_perplexity_gain": 0.0, "max_forgetting": 100.0, "reference_samples": 2},
    }
    path = project / "steward.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    outcome = steward("run", "--config", str(path), env=env)
    if "version" not in outcome:
        sys.exit(f"bench/serving_lm.py: steward run registered no version: {json.dumps(outcome)[:2000]}")
    version = outcome["version"]
    registry = f"sqlite:///{project / '.steward' / 'registry.db'}"
    setup = f"steward run: v{version} {outcome.get('decision')}"
    if outcome.get("decision") != "promoted":
        progress(f"  the gate refused v{version}: {'; '.join(outcome.get('reasons', []))}")
        steward("registry", "promote", f"{NAME}:{version}", "--registry", registry,
                "--reason", "serving benchmark: the speed of serving is measured, not quality", env=env)
        setup += " by the gate, then promoted by `steward registry promote`"
    show = steward("registry", "show", f"{NAME}:{version}", "--registry", registry, env=env)
    progress(f"  {setup}")
    return path, Path(show["version"]["artifact_path"]), setup


def merged_folder(version_dir: Path, target: Path) -> tuple[Path, str]:
    """The version as Steward loads it (adapter merged into its verified base, fp32), saved with its tokenizer
    for the plain pipeline; and the device Steward will pick."""
    from tasks.language_model import load_causal_lm
    from tasks.modeling import cpu_device, pick_device

    model, tokenizer, _ = load_causal_lm(version_dir, device=cpu_device())
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target, str(pick_device().torch_device)


async def drive(url: str, prompts: list[list[str]], max_tokens: int) -> tuple[list[Answer], int, float]:
    """Each client sends its prompts one after the other, all clients at once; the answers, failures, wall time."""
    answers: list[Answer] = []
    failed = 0

    async def client(own: list[str], session: httpx.AsyncClient) -> None:
        nonlocal failed
        for prompt in own:
            started = time.perf_counter()
            try:
                response = await session.post(url, json={"prompt": prompt, "max_tokens": max_tokens,
                                                         "temperature": 0})
                body = response.json() if response.status_code == 200 else None
            except (httpx.HTTPError, ValueError):
                body = None
            if body is None:
                failed += 1
                continue
            seconds = time.perf_counter() - started
            text = body["choices"][0]["text"] if "choices" in body else body["text"]
            usage = body["usage"]["completion_tokens"] if "usage" in body else None
            answers.append(Answer(prompt, text, seconds, usage))

    limits = httpx.Limits(max_connections=len(prompts), max_keepalive_connections=len(prompts))
    async with httpx.AsyncClient(timeout=600, limits=limits) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(own, session) for own in prompts))
        wall = time.perf_counter() - started
    return answers, failed, wall


def batch_texts(port: int) -> tuple[float, float]:
    """Steward's steward_batch_texts histogram: (sum, count) so far."""
    found = {"steward_batch_texts_sum": 0.0, "steward_batch_texts_count": 0.0}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=30).text.splitlines():
        name, _, value = line.partition(" ")
        if name in found:
            found[name] = float(value)
    return found["steward_batch_texts_sum"], found["steward_batch_texts_count"]


def measure(server: str, port: int, warm_up: str, prompts: list[list[str]], max_tokens: int,
            tokenizer: PreTrainedTokenizerBase) -> tuple[ServingResult, list[Answer]]:
    url = f"http://127.0.0.1:{port}/v1/completions"
    response = httpx.post(url, json={"prompt": warm_up, "max_tokens": max_tokens, "temperature": 0}, timeout=600)
    if response.status_code != 200:
        sys.exit(f"bench/serving_lm.py: {server} refused the warm-up request: {response.status_code} "
                 f"{response.text[:500]}")
    before = batch_texts(port) if server == "steward" else None
    answers, failed, wall = asyncio.run(drive(url, prompts, max_tokens))
    per_call = None
    if before is not None:
        after = batch_texts(port)
        calls = after[1] - before[1]
        per_call = (after[0] - before[0]) / calls if calls else None
    tokens = sum(len(tokenizer(a.text, add_special_tokens=False)["input_ids"]) for a in answers)
    usage = [a.usage_tokens for a in answers]
    milliseconds = np.array([a.seconds for a in answers] or [np.nan]) * 1000
    result = ServingResult(
        server, len(prompts), len(answers), failed, wall, tokens,
        sum(u for u in usage if u is not None) if any(u is not None for u in usage) else None,
        tokens / wall, len(answers) / wall, float(np.percentile(milliseconds, 50)),
        float(np.percentile(milliseconds, 95)), per_call,
    )
    progress(f"  {server}: {result.tokens_per_second:.1f} tokens/s, {result.requests_per_second:.2f} req/s, "
             f"p50 {result.p50_ms:.0f} ms, p95 {result.p95_ms:.0f} ms, {failed} failed, {wall:.1f} s")
    return result, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="smollm2", help="smollm2 (packaged) or a local HF decoder folder")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=4, help="requests per client, one after the other")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    base = args.base if args.base == "smollm2" else str(Path(args.base).resolve())
    env = {**os.environ, **QUIET_THIRD_PARTY_DEFAULTS}
    for variable in ("STEWARD_API_TOKEN", "STEWARD_REGISTRY_URL"):
        env.pop(variable, None)
    os.environ.update(QUIET_THIRD_PARTY_DEFAULTS)
    corpus, prompt_list = corpus_and_prompts(args.clients * args.requests + 1)
    warm_up, prompts = prompt_list[0], [prompt_list[1 + c * args.requests:1 + (c + 1) * args.requests]
                                        for c in range(args.clients)]
    with tempfile.TemporaryDirectory(prefix="steward-serving-lm-bench-") as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        progress(f"champion: one LoRA step over {base} on {len(corpus)} docstrings")
        config, version_dir, setup = register_champion(project, base, corpus, env)
        merged, device = merged_folder(version_dir, Path(tmp) / "merged")
        from tasks.modeling import load_tokenizer

        tokenizer = load_tokenizer(merged)
        port = free_port()
        command = [sys.executable, "-m", "steward.cli", "serve-model", "--model", f"{NAME}@champion", "--config",
                   str(config), "--port", str(port)]
        with running(command, port, env, Path(tmp) / "steward.log"):
            steward_result, steward_answers = measure("steward", port, warm_up, prompts, args.max_tokens, tokenizer)
        app = Path(tmp) / "plain_app.py"
        app.write_text(PLAIN_APP)
        port = free_port()
        command = [sys.executable, "-m", "uvicorn", "plain_app:app", "--port", str(port), "--log-level", "warning",
                   "--app-dir", tmp]
        plain_env = {**env, "PLAIN_MODEL": str(merged), "PLAIN_DEVICE": device}
        with running(command, port, plain_env, Path(tmp) / "plain.log"):
            plain_result, plain_answers = measure("plain", port, warm_up, prompts, args.max_tokens, tokenizer)
    plain_text = {a.prompt: a.text for a in plain_answers}
    compared = [a for a in steward_answers if a.prompt in plain_text]
    identical = sum(a.text == plain_text[a.prompt] for a in compared)
    report([steward_result, plain_result], {
        "base": base, "device": device, "champion": setup, "max_tokens": args.max_tokens,
        "requests_per_client": args.requests, "identical_completions": identical, "compared_completions": len(compared),
    }, args.json)


def report(results: list[ServingResult], setup: dict[str, object], as_json: bool) -> None:
    steward_result, plain_result = results

    def ratio(field: str) -> float | None:
        denominator = getattr(plain_result, field)
        return round(getattr(steward_result, field) / denominator, 2) if denominator else None

    ratios = {"tokens_per_second": ratio("tokens_per_second"), "requests_per_second": ratio("requests_per_second")}
    if as_json:
        print(json.dumps({"setup": setup, "results": [asdict(r) for r in results], "steward_over_plain": ratios},
                         indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"/v1/completions on 127.0.0.1, {steward_result.clients} clients × "
                        f"{setup['requests_per_client']} requests, greedy, max_tokens {setup['max_tokens']} "
                        f"({setup['base']}, {setup['device']}, one run)")
    for column in ("server", "tokens/s", "req/s", "p50 ms", "p95 ms", "tokens", "usage", "per call", "failed"):
        table.add_column(column, no_wrap=True)
    for r in results:
        table.add_row(r.server, f"{r.tokens_per_second:.1f}", f"{r.requests_per_second:.2f}", f"{r.p50_ms:.0f}",
                      f"{r.p95_ms:.0f}", str(r.completion_tokens),
                      "" if r.usage_completion_tokens is None else str(r.usage_completion_tokens),
                      "" if r.prompts_per_generate_call is None else f"{r.prompts_per_generate_call:.1f}",
                      str(r.failed))
    console = Console(width=None if sys.stdout.isatty() else 120)  # piped: no columns cut to 80 characters
    console.print(table)
    console.print("tokens: completions re-tokenized (both sides alike); usage: Steward's own count (end-of-text "
                  "included); per call: Steward's prompts per generate call")
    console.print(f"steward / plain: tokens/s × {ratios['tokens_per_second']}, "
                  f"requests/s × {ratios['requests_per_second']}; identical completions "
                  f"{setup['identical_completions']}/{setup['compared_completions']}; champion: {setup['champion']}")


if __name__ == "__main__":
    main()
