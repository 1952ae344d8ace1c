"""The `steward` command line.

Start-up must stay fast (`steward --help` well under a second), so this module imports only the
standard library at load time; each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from core.errors import ConfigError, StewardError, UnexpectedError, one_line
from core.vocabulary import REGISTRY_URL_ENV
from steward import __version__

DEBUG_ENV = "STEWARD_DEBUG"  # set: an unexpected error shows its traceback instead of one line

Handler = Callable[[argparse.Namespace], int]

QUIET_THIRD_PARTY_DEFAULTS = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",
    "PREFECT_SERVER_LOGGING_LEVEL": "ERROR",
    "PREFECT_LOGGING_LOG_PRINTS": "false",
}


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(2)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got '{text}'")
    return int(text)


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not seconds > 0 or math.isinf(seconds):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got '{text}'")
    return seconds


def _form_option(parser: argparse.ArgumentParser) -> None:
    from core.vocabulary import FORMS

    parser.add_argument("--format", dest="form", choices=FORMS,
                        help="the form to use (default: the fastest that passed the compression gate, else fp32)")


def _common(parser: argparse.ArgumentParser, *, config: str = "optional", json_flag: bool = True) -> None:
    parser.add_argument("--registry", metavar="URL", help="SQLAlchemy URL of the model registry")
    if config == "required":
        parser.add_argument("--config", required=True, metavar="FILE", help="Steward YAML config")
    elif config == "optional":
        parser.add_argument("--config", metavar="FILE", help="config whose registry.url and folder to use")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _lazy(module: str, function: str) -> Handler:
    """A handler that imports its command module only when the command runs."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        return getattr(importlib.import_module(module), function)(args)

    return run


def _add_stage_commands(commands: argparse._SubParsersAction) -> None:
    stages = "steward.commands.stages"
    demo = commands.add_parser("demo", help="write the demo dataset and config, then run the full flow")
    demo.add_argument("--workdir", default="steward-demo", metavar="DIR")
    demo.add_argument("--task", choices=("text-classification", "causal-lm"), default="text-classification",
                      help="classify support tickets (default), or adapt a language model to Python's documentation")
    _common(demo, config="none")
    demo.set_defaults(handler=_lazy(stages, "demo"))

    run = commands.add_parser("run", help="the full retraining flow once")
    _common(run, config="required")
    run.set_defaults(handler=_lazy(stages, "run"))

    validate = commands.add_parser("validate", help="validate the data (Great Expectations)")
    _common(validate, config="required")
    validate.add_argument("--data", metavar="PATH", help="validate this file as the training set")
    validate.set_defaults(handler=_lazy(stages, "validate"))

    for name, helptext in (
        ("pretrain", "domain-adaptive continued pretraining alone"),
        ("finetune", "fine-tuning alone (on the adapted checkpoint when there is one)"),
    ):
        stage = commands.add_parser(name, help=helptext)
        _common(stage, config="required")
        stage.add_argument("--nproc", type=_positive_int, default=1, metavar="N",
                           help="train with N processes (torch DistributedDataParallel through torchrun)")
        stage.set_defaults(handler=_lazy(stages, name))

    evaluate = commands.add_parser("evaluate", help="score a registered version on the config's test set")
    _common(evaluate, config="required")
    evaluate.add_argument("--model", required=True, metavar="NAME:VERSION")
    evaluate.set_defaults(handler=_lazy(stages, "evaluate"))

    monitoring = "steward.commands.monitoring"
    monitor = commands.add_parser("monitor", help="drift of a batch of current text against the champion's data")
    _common(monitor, config="required")
    monitor.add_argument("--current", required=True, metavar="PATH",
                         help="the current batch (csv/tsv/jsonl/parquet/txt), or `served` (the prediction log)")
    monitor.add_argument("--since", metavar="DURATION",
                         help="with --current served: how far back (24h, 30m, 7d; default serving.window)")
    monitor.add_argument("--fail-on-drift", action="store_true", help="exit 1 when drift is detected")
    monitor.set_defaults(handler=_lazy(monitoring, "monitor"))

    predict = commands.add_parser("predict", help="score a file with a registered version (NAME@ALIAS or NAME:VERSION)")
    _common(predict)
    predict.add_argument("--model", required=True, metavar="NAME@ALIAS", help="or NAME:VERSION")
    predict.add_argument("--input", required=True, metavar="PATH", help="csv/tsv/jsonl/parquet/txt")
    predict.add_argument("--output", metavar="PATH", help=".csv, .parquet or .jsonl (default: INPUT.predictions.csv)")
    predict.add_argument("--text-column", default="text", metavar="NAME")
    predict.add_argument("--generate", action="store_true",
                         help="a causal language model: write each text's completion (default: its perplexity)")
    predict.add_argument("--max-new-tokens", type=_positive_int, default=64, metavar="N",
                         help="with --generate: the most tokens a completion may have (default 64)")
    _form_option(predict)
    predict.set_defaults(handler=_lazy("steward.commands.predicting", "predict"))

    explain = commands.add_parser("explain", help="which tokens decided a registered classifier's label (integrated "
                                  "gradients)")
    _common(explain, json_flag=False)
    explain.add_argument("--json", action="store_true", help="print the explanations as one JSON list on stdout")
    explain.add_argument("--model", required=True, metavar="NAME@ALIAS", help="or NAME:VERSION")
    explain.add_argument("--text", required=True, action="append", metavar="TEXT", help="a text to explain (repeat)")
    explain.add_argument("--steps", type=_positive_int, default=50, metavar="N",
                         help="integration steps (default 50; more when the convergence delta is large)")
    explain.set_defaults(handler=_lazy("steward.commands.explaining", "explain"))

    serve_model = commands.add_parser("serve-model", help="serve a registered model over HTTP, following its alias")
    _common(serve_model, json_flag=False)
    serve_model.add_argument("--model", required=True, metavar="NAME@ALIAS", help="or NAME:VERSION (fixed)")
    serve_model.add_argument("--host", default="127.0.0.1")
    serve_model.add_argument("--port", type=_positive_int, default=8000)
    serve_model.add_argument("--token-file", metavar="FILE", help="bearer token (default: $STEWARD_API_TOKEN)")
    serve_model.add_argument("--poll-seconds", type=_positive_seconds, default=2.0, metavar="S",
                             help="how often the alias is checked for a new version")
    _form_option(serve_model)
    serve_model.set_defaults(handler=_lazy("steward.commands.serving", "serve_model"))

    serve = commands.add_parser("serve", help="serve the retraining and monitoring deployments on their schedules")
    _common(serve, config="required", json_flag=False)
    serve.set_defaults(handler=_lazy("steward.commands.serving", "serve"))


def _add_export_command(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser("export", help="write a registered classifier version as an MLflow pyfunc model")
    export.add_argument("ref", metavar="NAME:VERSION", help="or NAME@ALIAS")
    export.add_argument("--format", required=True, choices=("mlflow",),
                        help="mlflow: an MLflow pyfunc model (needs the extra [mlflow])")
    export.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) folder")
    _common(export)
    export.set_defaults(handler=_lazy("steward.commands.exporting", "export"))


def _add_registry_commands(commands: argparse._SubParsersAction) -> None:
    module = "steward.commands.registry"
    registry = commands.add_parser("registry", help="registered models, versions and aliases")
    actions = registry.add_subparsers(dest="action", required=True, parser_class=_Parser)

    models = actions.add_parser("models", help="list registered models")
    _common(models)
    models.set_defaults(handler=_lazy(module, "models"))

    versions = actions.add_parser("versions", help="list the versions of a model")
    versions.add_argument("name")
    _common(versions)
    versions.set_defaults(handler=_lazy(module, "versions"))

    show = actions.add_parser("show", help="one version: lineage, files, metrics, gate")
    show.add_argument("ref", metavar="NAME:VERSION")
    _common(show)
    show.set_defaults(handler=_lazy(module, "show"))

    promote = actions.add_parser("promote", help="point an alias at a version")
    promote.add_argument("ref", metavar="NAME:VERSION")
    promote.add_argument("--alias", default="champion")
    promote.add_argument("--approver", metavar="WHO",
                         help="optional check: must be who you are (the database login on PostgreSQL)")
    promote.add_argument("--reason", default="")
    _common(promote)
    promote.set_defaults(handler=_lazy(module, "promote"))

    rollback = actions.add_parser("rollback", help="champion back to the previous champion")
    rollback.add_argument("name")
    rollback.add_argument("--reason", default="", help="why (recorded with who did it in the audit log)")
    _common(rollback)
    rollback.set_defaults(handler=_lazy(module, "rollback"))

    roles = actions.add_parser("init-roles", help="PostgreSQL: roles steward_reader, _trainer, _approver, their grants")
    _common(roles)
    roles.set_defaults(handler=_lazy(module, "init_roles"))


def _add_audit_commands(commands: argparse._SubParsersAction) -> None:
    module = "steward.commands.audit"
    audit = commands.add_parser("audit", help="the hash-chained audit trail")
    actions = audit.add_subparsers(dest="action", required=True, parser_class=_Parser)

    log = actions.add_parser("log", help="audit events, newest last")
    log.add_argument("name", nargs="?", help="only events of this model")
    log.add_argument("--limit", type=_positive_int, default=None)
    _common(log)
    log.set_defaults(handler=_lazy(module, "log"))

    verify = actions.add_parser("verify", help="recompute the hash chain (and check its signed anchors)")
    verify.add_argument("--anchors", metavar="DIR", help="also check the signed digests in DIR against the chain")
    verify.add_argument("--public-key", metavar="FILE", help="with --anchors: the anchor key's public half")
    _common(verify)
    verify.set_defaults(handler=_lazy(module, "verify"))

    report = actions.add_parser("report", help="write the audit report of a version")
    report.add_argument("ref", metavar="NAME:VERSION")
    report.add_argument("--format", choices=("html", "md"), default="html")
    report.add_argument("--out", metavar="PATH")
    _common(report)
    report.set_defaults(handler=_lazy(module, "report"))

    keygen = actions.add_parser("keygen", help="an Ed25519 key pair for signing anchors of the chain")
    keygen.add_argument("--out", required=True, metavar="DIR",
                        help="writes DIR/anchor-private.pem (mode 0600) and DIR/anchor-public.pem; never overwrites")
    keygen.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    keygen.set_defaults(handler=_lazy(module, "keygen"))

    anchor = actions.add_parser("anchor", help="write a signed digest of the verified chain head")
    anchor.add_argument("--key", required=True, metavar="FILE", help="the private key from `steward audit keygen`")
    anchor.add_argument("--out", required=True, metavar="DIR", help="the anchor directory (off the database host)")
    _common(anchor)
    anchor.set_defaults(handler=_lazy(module, "anchor"))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="steward", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"steward {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_stage_commands(commands)
    _add_export_command(commands)
    _add_registry_commands(commands)
    _add_audit_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    for key, value in QUIET_THIRD_PARTY_DEFAULTS.items():
        os.environ.setdefault(key, value)
    args = build_parser().parse_args(argv)
    with _registry_url_in_environment(args):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    """The command's handler; every error becomes one line and an exit code."""
    try:
        return args.handler(args)
    except StewardError as exc:
        _report_error(args, exc)
        if isinstance(exc, ConfigError):
            from steward.commands.common import record_rejected_config

            record_rejected_config(args, exc)
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("steward: interrupted\n")
        return 130
    except Exception as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        error = UnexpectedError(f"unexpected {type(exc).__name__}: {exc} (set {DEBUG_ENV}=1 for the traceback)")
        _report_error(args, error)
        return error.exit_code


@contextmanager
def _registry_url_in_environment(args: argparse.Namespace) -> Iterator[None]:
    """Hand `--registry` to the command through STEWARD_REGISTRY_URL, where the one resolution of the registry
    (`core.config.resolve_registry_url`) finds it first, so it never becomes a Prefect flow parameter: Prefect
    stores parameters and shows them in its UI, password included. The variable is restored afterwards."""
    url = getattr(args, "registry", None)
    if not url:
        yield
        return
    previous = os.environ.get(REGISTRY_URL_ENV)
    os.environ[REGISTRY_URL_ENV] = url
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(REGISTRY_URL_ENV, None)
        else:
            os.environ[REGISTRY_URL_ENV] = previous


def _report_error(args: argparse.Namespace, error: StewardError) -> None:
    """The one-line error on stderr (and, with --json, as one JSON object on stdout)."""
    message = one_line(str(error))
    sys.stderr.write(f"steward: error: {message}\n")
    if getattr(args, "json", False):
        import json

        sys.stdout.write(json.dumps({"ok": False, "error": message, "exit_code": error.exit_code}) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
