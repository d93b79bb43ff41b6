"""``retain``: the command-line interface."""

from __future__ import annotations

import faulthandler
import getpass
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from retain.daemon.config import Config, ConfigError, find_config, load_config, open_artifacts
from retain.daemon.logs import LogFormat, configure_logging
from retain.errors import RetainError, system_error


class _Commands(TyperGroup):
    """Any ``RetainError`` a command raises becomes one line on stderr, ``error: <message>``,
    and exit status 1: here, not in every command."""

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RetainError as exc:
            fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - what the system or a service said, as one line; bugs re-raised
            message = system_error(exc)
            if message is None:
                raise
            fail(message)


app = typer.Typer(
    cls=_Commands,
    help="Continual-learning daemon with a model registry.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Off a terminal (pipes, journald) rich would wrap tables at 80 columns. Markup is off: what
# is printed holds file names, rationales ("... [little-shift]") and error messages, and rich
# would swallow any bracketed word in them as a style tag. Styles are applied with Text.
out = Console(width=None if sys.stdout.isatty() else 200, markup=False)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200, markup=False)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
SCREENFUL = 20
LimitOption = Annotated[int, typer.Option("--limit", min=1, help=f"Show the last N (default {SCREENFUL}).")]
AllOption = Annotated[bool, typer.Option("--all", help="Show every one.")]
ModelOption = Annotated[Optional[str], typer.Option(
    "--model", "-m", help="The model (its [models.NAME] table); optional when the config has one.")]


def page(limit: int, show_all: bool) -> int | None:
    return None if show_all else limit


def print_listing(rows: list[dict[str, Any]], as_json: bool, table: Callable[[list], Any], total: int,
                  what: str) -> None:
    """A page of rows as JSON or a table; what the page left out is said on stderr, so JSON
    on stdout stays whole."""
    if as_json:
        emit_json(rows)
    else:
        out.print(table(rows))
    if len(rows) < total:
        err.print(f"the last {len(rows)} of {total} {what}; --limit N or --all for more", highlight=False)


@dataclass
class CliState:
    config_path: Path | None
    log_format: LogFormat
    log_level: str

    def config(self) -> Config:
        from retain.daemon.config import add_factory_folder

        config = load_config(find_config(self.config_path))
        add_factory_folder(config.base_dir)  # a model module beside retain.toml imports as it is
        return config

    def lineage(self, model: str | None, ref: str | None = None):
        """The config and registry of one model, and the version ``ref`` names in it (``None``
        without ``ref``). ``ref`` may name the model itself (``NAME@7``)."""
        from retain.registry import VersionRef

        parsed = VersionRef.parse(ref) if ref is not None else None
        if parsed is not None and parsed.model is not None:
            if model is not None and model != parsed.model:
                fail(f"--model {model} but {ref} is a version of {parsed.model}")
            model = parsed.model
        config = self.config().for_model(model)
        registry = open_registry(config)
        return config, registry, (registry.number_of(parsed) if parsed is not None else None)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line naming what is wrong and exit non-zero."""
    err.print(Text.assemble(("error:", "bold red"), f" {message}"), highlight=False, soft_wrap=True)
    raise typer.Exit(code) from None


def main() -> NoReturn:
    """The console script."""
    try:
        app(prog_name="retain")
        code: int | str | None = 0
    except SystemExit as stop:
        code = stop.code
    exit_process(code)


def exit_process(code: int | str | None) -> NoReturn:
    """End the process as ``sys.exit(code)`` would, without tearing its modules down: once
    torch and Avalanche are imported, the interpreter's finalisation takes seconds after the
    last batch is done. Exit handlers still run, and the streams and logs are flushed."""
    if "torch" not in sys.modules:
        sys.exit(code)
    import atexit
    import logging

    if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


def emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # noqa: BLE001 - no user name in some containers
        return f"cli:uid{os.getuid()}"


def use_threads(config: Config) -> None:
    from retain.strategies.training import limit_threads

    limit_threads(config.training.threads)


def prepare_training(config: Config) -> None:
    """Thread count set and the training device checked before any work starts."""
    use_threads(config)
    try:
        config.training.resolved_device()
    except ConfigError as exc:
        fail(f"{config.source or 'config'}: {exc}")


def open_registry(config: Config):
    from retain.registry import Registry, SchemaError, require_database

    require_database(config.registry_url)
    try:  # a config of several models before for_model: a view for what concerns them all
        return Registry(config.registry_url, model=config.selected or config.model_names[0])
    except SchemaError as exc:
        fail(f"{config.registry_url}: {exc}")


def require_artifacts(config: Config, version) -> None:
    """Before any alias moves to ``version``: fail, naming each digest, unless every artifact it
    needs is in the store and intact."""
    from retain.daemon.collect import unusable_artifacts

    problems = unusable_artifacts(version, open_artifacts(config))
    gone = [digest[:12] for digest, why in problems.items() if why == "gone"]
    broken = [f"{digest[:12]} ({why})" for digest, why in problems.items() if why != "gone"]
    if broken:
        fail(f"version {version.version}'s artifacts are damaged: {', '.join(broken)}; nothing was moved")
    if gone:
        fail(f"version {version.version}'s artifacts are gone ({', '.join(gone)}): "
             "`retain gc` deletes those of versions it does not keep")


def publish_production(config: Config, registry) -> None:
    """After a move from the command line: publish the new production (with ``publish.dir``).
    The move stands if this fails; a running daemon publishes it at its next look."""
    if config.publish_dir is None:
        return
    from retain.daemon.publish import publish

    production = registry.production()
    try:
        folder = publish(config, production, open_artifacts(config))
    except RetainError as exc:
        err.print(f"warning: {production.model}@{production.version} is production but was not published: {exc}",
                  highlight=False, soft_wrap=True)
        return
    out.print(f"published {production.model}@{production.version} to {folder}", soft_wrap=True)


@app.callback()
def global_options(
    ctx: typer.Context,
    config: Annotated[
        Optional[Path],
        typer.Option("--config", "-c", help="Config file (default: $RETAIN_CONFIG, then ./retain.toml)."),
    ] = None,
    log_format: Annotated[str, typer.Option("--log-format", help="text or json")] = "text",
    log_level: Annotated[str, typer.Option("--log-level", help="debug, info, warning, error")] = "info",
) -> None:
    if log_format not in ("text", "json"):
        fail(f"--log-format must be text or json, not {log_format!r}", code=2)
    if log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        fail(f"--log-level must be debug, info, warning or error, not {log_level!r}", code=2)
    configure_logging(log_level, log_format)  # type: ignore[arg-type]
    ctx.obj = CliState(config_path=config, log_format=log_format, log_level=log_level)  # type: ignore[arg-type]


@app.command()
def init(
    ctx: typer.Context,
    data: Annotated[Optional[Path], typer.Option("--data", help="Data the initial model knows.")] = None,
    train: Annotated[bool, typer.Option("--train", help="Train version 1 on --data.")] = False,
    model: ModelOption = None,
) -> None:
    """Create the workdir and registry and register a model's version 1 as production."""
    from retain.daemon.bootstrap import init_workspace
    from retain.daemon.config import parse_config

    state: CliState = ctx.obj
    path = find_config(state.config_path)
    if path.exists():
        config = state.config()
    else:
        config = parse_config({}, path.resolve())
        err.print(f"no config at {path}; using defaults (workdir {config.workdir})")
    config = config.for_model(model)
    if data is None:
        fail("retain init needs --data FILE: the data the initial model knows seeds the replay memory")
    if not data.exists():
        fail(f"--data {data}: no such file")
    if train:
        prepare_training(config)
    else:
        use_threads(config)
    from retain.views import audit_sizing_of

    version = init_workspace(config, data, train, actor())
    which = "" if len(config.model_names) == 1 else f"{config.model_name}@"
    out.print(
        f"version {which}{version.version} is production "
        f"(held-out accuracy {version.acc_new_candidate:.3f}); workdir {config.workdir}"
    )
    sizing = audit_sizing_of(version, config.gate)
    if sizing is not None and not sizing.sufficient:
        err.print(f"warning: {data}: {sizing.warning()}")
    publish_production(config, open_registry(config))


@app.command()
def run(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Process what is pending, then exit.")] = False,
    worker: Annotated[bool, typer.Option(
        "--worker", help="Watch no folder: process the batches ingested into the bucket (retain ingest --remote).",
    )] = False,
    models: Annotated[Optional[list[str]], typer.Option(
        "--model", "-m", help="Serve only this model (repeat for several); default every model in the config.",
    )] = None,
) -> None:
    """The daemon: watch the inboxes and process each model's batches one at a time."""
    from retain.daemon.metrics import ServiceMetrics
    from retain.daemon.notify import Notifier
    from retain.daemon.outage import Outages, until_available
    from retain.daemon.service import Service

    config = ctx.obj.config()
    # A watchdog SIGABRT leaves a Python stack in the journal. __stderr__: the process's own,
    # also where sys.stderr has been replaced (the command run inside another program).
    faulthandler.enable(file=sys.__stderr__)
    prepare_training(config)
    for name in models or ():
        config.for_model(name)  # an unknown name fails here, naming the config's models
    stopping = threading.Event()
    service = None

    def stop(signum: int, _frame: Any) -> None:
        stopping.set()
        if service is not None:
            service.request_stop()

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    # A registry that cannot be reached at start is waited for (said once a minute), not a crash;
    # systemd hears the daemon is up but degraded, so its start timeout does not kill it.
    notifier = Notifier()
    registry = until_available(lambda: open_registry(config), Outages(), "opening the registry", stopping,
                               lambda: notifier.ready("degraded: waiting for the registry"))
    if registry is None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        return
    metrics = ServiceMetrics(config.metrics.recent_batches)
    service = Service(config, registry, metrics, notifier=notifier, watch=not worker, models=models or None)
    try:
        if config.metrics.enabled:
            try:
                metrics.serve(config.metrics.host, config.metrics.port)
            except OSError as exc:
                fail(f"metrics.port {config.metrics.port} on {config.metrics.host}: {exc.strerror}")
        service.run(once=once)
    finally:
        metrics.shutdown()
        registry.close()
        for signum, handler in previous.items():  # the command may run inside a longer-lived process
            signal.signal(signum, handler)


@app.command()
def ingest(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="Batch files to queue.")],
    remote: Annotated[bool, typer.Option(
        "--remote", help="Upload to the bucket (artifacts.url) and queue in the registry, for workers on other "
                         "hosts; no inbox needed here.",
    )] = False,
    model: ModelOption = None,
) -> None:
    """Copy files atomically into the inbox (temporary name, then rename), or with --remote
    into the bucket's inbox."""
    config = ctx.obj.config().for_model(model)
    for source in files:
        if not source.is_file():
            fail(f"{source}: no such file")
    if remote:
        from retain.daemon.remote_inbox import upload_batch

        registry, artifacts = open_registry(config), open_artifacts(config)
        for source in files:
            batch, created = upload_batch(config, registry, artifacts, source)
            out.print(f"{source} -> batch {batch.id} ({batch.path})" + ("" if created else ", queued before"),
                      soft_wrap=True)
        return
    from retain.daemon.watcher import ingest_file

    config.inbox.mkdir(parents=True, exist_ok=True)
    for source in files:
        target = ingest_file(source, config.inbox)
        out.print(f"{source} -> {target}", soft_wrap=True)


@app.command()
def versions(
    ctx: typer.Context, as_json: JsonOption = False, limit: LimitOption = SCREENFUL, show_all: AllOption = False,
    model: ModelOption = None,
) -> None:
    """List a model's versions, the newest last."""
    from retain.views import version_row, versions_table

    _, registry, _ = ctx.obj.lineage(model)
    production = registry.alias()
    rows = [version_row(v, production) for v in registry.versions(limit=page(limit, show_all))]
    print_listing(rows, as_json, versions_table, registry.count_versions(), "versions")


@app.command()
def show(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="Version: 7, production, NAME@7 or NAME@production.")],
    as_json: JsonOption = False,
    model: ModelOption = None,
) -> None:
    """One version with metrics, lineage and rationale."""
    from retain.views import version_detail

    _, registry, number = ctx.obj.lineage(model, version)
    stored = registry.version(number)
    row = version_detail(stored, registry.alias(), registry.lineage(number))
    details = stored.version_details()
    erased = {batch.id: batch for batch in registry.erased_batches()}
    ancestors = registry.versions_numbered(set(row["lineage"])) if erased else []
    row["trained_on_erased_batches"] = sorted({v.batch_id for v in ancestors if v.batch_id in erased})
    if as_json:
        emit_json(row)
        return
    out.print(Text.assemble((f"{row['model']}@{row['version']}", "bold"), f" — {row['status']}"
                            f"{' (production)' if row['is_production'] else ''}, strategy {row['strategy']}"))
    out.print(f"lineage: {' <- '.join(map(str, row['lineage']))}    batch: {row['batch'] or '-'}")
    if row["severity"] is not None:
        distance = details.shift.label_distance if details.shift else 0.0
        novel = list(details.shift.novel_classes) if details.shift else []
        out.print(
            f"shift: {row['severity']} (MMD² {row['shift_score']:.4g}, p {row['p_value']:.3g}, "
            f"label distance {distance:.3f}, novel {novel})"
        )
    noise = details.shift.noise_reason if details.shift else None
    if noise:
        out.print(f"label noise: {noise.removeprefix('suspected label noise: ')}")
    for label, cand, prod in (
        ("old accuracy", row["acc_old_candidate"], row["acc_old_production"]),
        ("new accuracy", row["acc_new_candidate"], row["acc_new_production"]),
    ):
        if cand is not None:
            prod_text = "-" if prod is None else f"{prod:.4f}"
            out.print(f"{label}: candidate {cand:.4f}, production {prod_text}")
    if row["forgetting"] is not None:
        stderr = "" if details.forgetting_stderr is None else f" ± {details.forgetting_stderr:.4f}"
        limit = "" if details.forgetting_limit is None else f", limit {details.forgetting_limit:.4f}"
        if details.forgetting_bounds is not None:  # the paired gate's finding (older rows have only the stderr)
            lower, upper = details.forgetting_bounds
            stderr = (f", {details.gate_confidence:.0%} bounds [{lower:+.4f}, {upper:+.4f}] over "
                      f"{details.audit_samples} audit samples")
            limit += f": {details.gate_finding}"
            if details.gate_finding == "unresolved":
                limit += f" (about {details.samples_to_resolve} audit samples would resolve it)"
        out.print(f"forgetting: {row['forgetting']:+.4f}{stderr}{limit}")
    for group in details.per_batch or ():
        out.print(
            f"  audit batch {group.batch}: production {group.production:.3f}, "
            f"candidate {group.candidate:.3f}, forgetting {group.forgetting:+.3f} (n={group.n})"
        )
    if details.training_seconds is not None:
        steps = "" if details.optimizer_steps is None else f", {details.optimizer_steps} optimizer steps over " \
            f"{details.samples_seen} samples"
        start = {"continued": "; meta continued the lineage's initialisation",
                 "learned": "; meta learned its initialisation afresh"}.get(details.meta_start or "", "")
        out.print(f"compute: {details.training_seconds:.2f} s{steps} on {details.device or '?'}{start}")
    for batch_id in row["trained_on_erased_batches"]:
        out.print(f"erased data: its weights descend from training on batch {batch_id}, since erased "
                  f"({erased[batch_id].reason.removeprefix('erased: ')})")
    out.print(f"rationale: {row['rationale']}")
    for reason in row["decision_reasons"]:
        out.print(f"gate: {reason}")
    meta_init = f"  meta init: sha256:{row['meta_init_sha256']}" if row.get("meta_init_sha256") else ""
    out.print(f"artifact: sha256:{row['artifact_sha256']}  replay: sha256:{row['replay_sha256']}{meta_init}")


@app.command()
def promote(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="Version to make production: 7 or NAME@7.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")] = "",
    force: Annotated[bool, typer.Option("--force", help="Allow a version the gate rejected.")] = False,
    model: ModelOption = None,
) -> None:
    """Move a model's production alias to VERSION."""

    config, registry, number = ctx.obj.lineage(model, version)
    require_artifacts(config, registry.version(number))
    moved = registry.promote(number, actor(), reason, force=force)
    out.print(f"{registry.model} production: {moved.from_version} -> {moved.to_version}")
    publish_production(config, registry)


@app.command()
def rollback(
    ctx: typer.Context,
    to: Annotated[Optional[str], typer.Option(
        "--to", help="Roll back to this earlier production version (7 or NAME@7).")] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")] = "",
    model: ModelOption = None,
) -> None:
    """Move a model's production back to the version it held before."""

    config, registry, number = ctx.obj.lineage(model, to)
    require_artifacts(config, registry.version(registry.rollback_target(to=number)))
    moved = registry.rollback(actor(), reason, to=number)
    out.print(f"{registry.model} production: {moved.from_version} -> {moved.to_version}")
    publish_production(config, registry)


@app.command()
def approve(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="The awaiting candidate: NAME@7 or 7.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")] = "",
    model: ModelOption = None,
) -> None:
    """Make a candidate that awaits approval (registry.auto_promote = false) production."""
    config, registry, number = ctx.obj.lineage(model, version)
    require_artifacts(config, registry.version(number))
    moved = registry.approve(number, actor(), reason)
    out.print(f"{registry.model} production: {moved.from_version} -> {moved.to_version} (approved)")
    publish_production(config, registry)


@app.command()
def reject(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="The awaiting candidate: NAME@7 or 7.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept on the version).")],
    model: ModelOption = None,
) -> None:
    """Close a candidate that awaits approval without promoting it."""
    _, registry, number = ctx.obj.lineage(model, version)
    row = registry.decline(number, actor(), reason)
    out.print(f"{row.model}@{row.version} rejected: {row.review_note}", soft_wrap=True)


@app.command()
def webhooks(
    ctx: typer.Context, as_json: JsonOption = False, limit: LimitOption = SCREENFUL, show_all: AllOption = False,
    delivered: Annotated[bool, typer.Option("--delivered", help="Show delivered ones too.")] = False,
) -> None:
    """Webhook deliveries still pending, being sent, or failed (out of attempts)."""
    from retain.registry.tables import DeliveryState
    from retain.views import deliveries_table, delivery_row

    registry = open_registry(ctx.obj.config())
    states = (DeliveryState.PENDING, DeliveryState.SENDING, DeliveryState.FAILED,
              *([DeliveryState.DELIVERED] if delivered else []))
    rows = [delivery_row(d, e) for d, e in registry.deliveries(states, limit=page(limit, show_all))]
    print_listing(rows, as_json, deliveries_table, registry.count_deliveries(states), "deliveries")


alias_app = typer.Typer(help="Aliases other than production (challenger, staging, …).", no_args_is_help=True)
app.add_typer(alias_app, name="alias")


@alias_app.command("set")
def alias_set(
    ctx: typer.Context,
    alias: Annotated[str, typer.Argument(help="NAME@ALIAS, or ALIAS with --model.")],
    version: Annotated[int, typer.Argument(help="The version it points at.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")] = "",
    model: ModelOption = None,
) -> None:
    """Point an alias at a version."""
    registry, name = _alias_of(ctx, alias, model)
    require_artifacts(ctx.obj.config(), registry.version(version))
    moved = registry.set_alias(name, version, actor(), reason)
    out.print(f"{registry.model}@{name}: {moved.from_version or '-'} -> {moved.to_version}")


@alias_app.command("rm")
def alias_rm(
    ctx: typer.Context,
    alias: Annotated[str, typer.Argument(help="NAME@ALIAS, or ALIAS with --model.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")] = "",
    model: ModelOption = None,
) -> None:
    """Remove an alias (production cannot be removed)."""
    registry, name = _alias_of(ctx, alias, model)
    removed = registry.remove_alias(name, actor(), reason)
    out.print(f"{registry.model}@{name} removed (it held version {removed.from_version})")


def _alias_of(ctx: typer.Context, text: str, model: str | None):
    from retain.registry import VersionRef

    ref = VersionRef.parse(text)
    if ref.alias is None:
        fail(f"{text}: name an alias (NAME@challenger), not a version")
    _, registry, _ = ctx.obj.lineage(ref.model or model)
    if ref.model is not None and model is not None and ref.model != model:
        fail(f"--model {model} but {text} is an alias of {ref.model}")
    return registry, ref.alias


@app.command()
def history(
    ctx: typer.Context, as_json: JsonOption = False, limit: LimitOption = SCREENFUL, show_all: AllOption = False,
    model: ModelOption = None,
) -> None:
    """A model's alias audit log, the newest last."""
    from retain.views import event_row, history_table

    _, registry, _ = ctx.obj.lineage(model)
    rows = [event_row(e) for e in registry.history(limit=page(limit, show_all))]
    print_listing(rows, as_json, history_table, registry.count_events(), "alias moves")


@app.command()
def batches(
    ctx: typer.Context, as_json: JsonOption = False, limit: LimitOption = SCREENFUL, show_all: AllOption = False,
    model: ModelOption = None,
) -> None:
    """Batches with state, shift, strategy and outcome, the newest last (of every model unless
    --model names one)."""
    from retain.views import batch_row, batches_table

    config = ctx.obj.config()
    every = model is None and len(config.model_names) > 1
    registry = open_registry(config if every else config.for_model(model))
    listed = registry.batches(limit=page(limit, show_all), every_model=every)
    by_number: dict[tuple[str | None, int], Any] = {}
    for name in {b.model for b in listed if b.version and b.model}:
        numbers = {b.version for b in listed if b.version and b.model == name}
        by_number |= {(name, v.version): v for v in registry.for_model(name).versions_numbered(numbers)}
    rows = [batch_row(b, by_number.get((b.model, b.version))) for b in listed]
    print_listing(rows, as_json, batches_table, registry.count_batches(every_model=every), "batches")


@app.command()
def models(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Every model: production version, versions, queue depth, last batch, forgetting."""
    from retain.api import Client
    from retain.views import model_row, models_table

    config = ctx.obj.config()
    client = Client(open_registry(config), open_artifacts(config), config.model_names)
    rows = [model_row(summary, config) for summary in client.models()]
    if as_json:
        emit_json(rows)
    else:
        out.print(models_table(rows))


@app.command()
def status(ctx: typer.Context, as_json: JsonOption = False, model: ModelOption = None) -> None:
    """Daemon liveness, queue depth and production version (of one model, or added up)."""
    from retain.daemon.status import DaemonState, liveness
    from retain.views import audit_sizing_of

    config = ctx.obj.config()
    names = [config.for_model(model).model_name] if model is not None else config.model_names
    registry = open_registry(config)
    daemon = liveness(config.workdir)
    depths = registry.queue_depths()
    unscanned = unscanned_files(config, registry, names)
    per_model = {}
    for name in names:
        lineage = registry.for_model(name)
        number = lineage.alias()
        sizing = None if number is None else audit_sizing_of(lineage.version(number), config.for_model(name).gate)
        per_model[name] = {"queue_depth": depths.get(name, 0), "unscanned_files": unscanned[name],
                           "production_version": number,
                           "audit_samples": None if sizing is None else sizing.samples,
                           "audit_samples_needed": None if sizing is None else sizing.needed}
        if sizing is not None and not sizing.sufficient:
            per_model[name]["warning"] = sizing.warning()
    payload = {"daemon": daemon, "queue_depth": sum(m["queue_depth"] for m in per_model.values()),
               "unscanned_files": sum(m["unscanned_files"] for m in per_model.values()),
               "production_version": per_model[names[0]]["production_version"] if len(names) == 1 else None,
               "models": per_model}
    dead = daemon.get("state") == DaemonState.DEAD
    if as_json:
        emit_json(payload)
        raise typer.Exit(1 if dead else 0)
    if daemon["running"]:
        doing = f"processing batch {daemon['batch']}" if daemon.get("batch") else daemon["state"]
        out.print(f"daemon: running (pid {daemon['pid']} on {daemon['host']}), {doing}")
    elif dead:
        out.print(f"daemon: dead (pid {daemon['pid']} on {daemon['host']} is gone without stopping; last heartbeat "
                  f"{daemon['heartbeat_age_seconds']:.0f} s ago)")
    else:
        out.print("daemon: not running")
    unscanned = payload["unscanned_files"]
    waiting = f" (and {unscanned} files in the inbox not yet scanned)" if unscanned else ""
    out.print(f"queue depth: {payload['queue_depth']}{waiting}")
    if len(names) == 1:
        out.print(f"production version: {payload['production_version'] or '-'}")
    else:
        for name, state in per_model.items():
            out.print(f"  {name}: production {state['production_version'] or '-'}, {state['queue_depth']} queued")
    for name, state in per_model.items():
        if "warning" in state:
            out.print(f"warning: {'' if len(names) == 1 else f'model {name}: '}{state['warning']}")
    if dead:
        raise typer.Exit(1)


def unscanned_files(config: Config, registry, names: list[str]) -> dict[str, int]:
    """Per model, the files in its inbox that no batch records yet (the daemon has not seen
    them, or is down)."""
    from retain.daemon.watcher import is_candidate, signature
    from retain.registry import BatchState

    recorded = {batch.path for state in (BatchState.PENDING, BatchState.PROCESSING, BatchState.FAILED)
                for batch in registry.batches_in_state(state)}
    counts = {}
    for name in names:
        inbox = config.for_model(name).inbox
        files = [p for p in inbox.iterdir() if is_candidate(p) and signature(p) is not None] if inbox.is_dir() else []
        counts[name] = sum(str(p) not in recorded for p in files)
    return counts


@app.command()
def forget(
    ctx: typer.Context,
    batch: Annotated[int, typer.Option("--batch", help="The batch whose samples to erase (see `retain batches`).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the audit log); required.")],
    model: ModelOption = None,
) -> None:
    """Erase a batch's samples: a new production version whose replay memory no longer holds
    them (weights unchanged); the next `retain gc` deletes the batch's file and chunks."""
    from retain.daemon.erasure import WEIGHTS_UNCHANGED_WHY, forget_batch

    config = ctx.obj.config().for_model(model)
    registry = open_registry(config)
    use_threads(config)
    row = forget_batch(registry, open_artifacts(config), batch, reason, actor())
    out.print(f"{registry.model} production: {row.parent} -> {row.version}, without batch {batch}'s samples")
    out.print(f"{WEIGHTS_UNCHANGED_WHY}; `retain show` marks the versions trained on it")
    out.print("the batch's file and the chunks holding its samples are deleted at the next `retain gc`")
    publish_production(config, registry)


@app.command()
def gc(
    ctx: typer.Context,
    keep_last: Annotated[int, typer.Option("--keep-last", min=0, help="Keep each model's last N versions too.")] = 10,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be deleted; delete nothing.")] = False,
    grace: Annotated[float, typer.Option(
        "--grace", min=0, help="Spare artifacts younger than this many seconds (a daemon may be registering them).",
    )] = 3600.0,
    as_json: JsonOption = False,
    model: ModelOption = None,
) -> None:
    """Delete artifacts that no kept version references: never production, any alias, the
    rollback stack, a candidate awaiting approval or the last --keep-last versions."""
    from retain.daemon.collect import BatchFolders, collect, plan_collection

    config = ctx.obj.config()
    names = [config.for_model(model).model_name] if model is not None else config.model_names
    registry = open_registry(config)
    artifacts = open_artifacts(config)
    plan = plan_collection(registry, artifacts, names, keep_last, grace, BatchFolders.of(config))
    failed = [] if dry_run else collect(plan, artifacts, registry)
    payload = {"dry_run": dry_run, "artifacts": len(plan.garbage), "bytes": plan.freed_bytes, "spared": plan.spared,
               "erased_files": [str(e.path) for e in plan.erased_files],
               "erased_files_not_deleted": [{"batch": e.batch, "file": str(e.path), "reason": why}
                                            for e, why in failed],
               "erased_files_not_found": [{"batch": e.batch, "recorded_path": str(e.path)}
                                          for e in plan.erased_unfound],
               "models": {name: {"kept": list(plan.kept[name]), "released": list(plan.released[name])}
                          for name in names}}
    for erased in plan.erased_unfound:
        err.print(f"warning: erased batch {erased.batch}'s file is not at {erased.path}, nor anywhere retain moves "
                  f"batch files: if it was moved elsewhere, delete it there", highlight=False, soft_wrap=True)
    if as_json:
        emit_json(payload)
    else:
        _print_collection(plan, names, dry_run, grace)
    if failed:
        fail("; ".join(f"erased batch {e.batch}'s file {e.path} was not deleted: {why}" for e, why in failed))


def _print_collection(plan, names: list[str], dry_run: bool, grace: float) -> None:
    for name in names:
        released = plan.released[name]
        out.print(f"{name}: keeps versions {_ranges(plan.kept[name]) or '-'}; "
                  f"{'no other versions' if not released else 'releases versions ' + _ranges(released)}")
    verb = "would delete" if dry_run else "deleted"
    spared = f" ({plan.spared} unreferenced but younger than --grace {grace:g} s, spared)" if plan.spared else ""
    out.print(f"{verb} {len(plan.garbage)} artifacts, {plan.freed_bytes:,} bytes{spared}")
    for erased in plan.erased_files:
        out.print(f"{verb} erased batch {erased.batch}'s file {erased.path}", soft_wrap=True)


def _ranges(numbers) -> str:
    """``1-3, 7, 9-10``."""
    spans: list[list[int]] = []
    for number in sorted(numbers):
        if spans and number == spans[-1][1] + 1:
            spans[-1][1] = number
        else:
            spans.append([number, number])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)


def read_data(file: Path, spec):
    """A data file for a command that does not need its labels, or a one-line error naming it."""
    from retain.daemon.loading import BatchRejected, load_batch

    if not file.is_file():
        fail(f"{file}: no such file")
    try:
        return load_batch(file, spec, require_labels=False)
    except BatchRejected as exc:
        fail(f"{file}: {exc.reason}")


@app.command()
def predict(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Data file (.npz, .pt, .csv, .parquet); labels optional.")],
    version: Annotated[Optional[str], typer.Option(
        "--version", help="Version: 7, an alias or NAME@… (default: production).")] = None,
    output: Annotated[Optional[Path], typer.Option("--out", help="Write predictions here (.json or .csv).")] = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Most probable classes per sample in "
                                       "'probabilities' (--json, --out .json).")] = 3,
    as_json: JsonOption = False,
    model: ModelOption = None,
) -> None:
    """Predicted labels for a data file, with each sample's most probable classes (labels in it
    are not needed; if the model has their classes, the accuracy is reported too)."""
    from retain.daemon.loading import DataSpec
    from retain.daemon.versions import load_model, spec_of
    from retain.strategies.models import probabilities, top_classes

    config, registry, number = ctx.obj.lineage(model, version)
    use_threads(config)
    if number is None:
        number = registry.alias()
    if number is None:
        from retain.daemon.pipeline import no_production

        fail(no_production(config))
    row = registry.version(number)
    model = load_model(row, open_artifacts(config))
    spec = spec_of(row)
    loaded = read_data(file, DataSpec(spec.input_shape, spec.num_classes, limits=config.data))
    probable = probabilities(model, loaded.x)
    predictions = probable.argmax(1).tolist() if len(probable) else []
    payload: dict[str, Any] = {
        "version": number, "predictions": predictions,
        "probabilities": [[{"class": c, "probability": p} for c, p in row] for row in top_classes(probable, top_k)],
    }
    if loaded.y is not None:  # labels are never needed; with ones the model has, it is scored
        right = sum(p == t for p, t in zip(predictions, loaded.y.tolist(), strict=True))
        payload["accuracy"] = right / len(predictions)
    if output is not None:
        if output.suffix.lower() == ".csv":
            output.write_text("prediction\n" + "".join(f"{p}\n" for p in predictions))
        else:
            output.write_text(json.dumps(payload) + "\n")
        err.print(f"{len(predictions)} predictions from version {number} written to {output}")
    if as_json:
        emit_json(payload)
    elif output is None:
        scored = f", accuracy {payload['accuracy']:.4f} on the file's labels" if "accuracy" in payload else ""
        out.print(f"version {number}: {len(predictions)} predictions{scored}")
        out.print(" ".join(map(str, predictions)))


@app.command()
def check(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Data file (.npz, .pt, .csv, .parquet); labels optional.")],
    as_json: JsonOption = False,
    model: ModelOption = None,
) -> None:
    """How far a batch has shifted from what production knows, without training or writing
    anything. Without labels: the feature MMD, and production's prediction histogram on the
    file against its histogram on the replay memory."""
    from retain.daemon.pipeline import batch_seed, data_spec
    from retain.daemon.versions import load_memory, load_model, spec_of
    from retain.strategies.measure import measure_batch, measure_unlabelled

    config, registry, _ = ctx.obj.lineage(model)
    use_threads(config)
    production = registry.production()
    if production is None:
        from retain.daemon.pipeline import no_production

        fail(no_production(config))
    artifacts = open_artifacts(config)
    spec = spec_of(production)
    loaded = read_data(file, data_spec(config, spec))
    network, memory = load_model(production, artifacts), load_memory(production, artifacts)
    seed = batch_seed(loaded.sha256)
    labelled = loaded.y is not None
    if labelled:
        report = measure_batch(network, spec.head, memory, loaded.x, loaded.y, spec.num_classes, config.shift, seed)
    else:
        report = measure_unlabelled(network, spec.head, memory, loaded.x, spec.num_classes, config.shift, seed)
    payload = {
        "model": production.model, "production_version": production.version, "file": str(file),
        "labelled": labelled, "severity": report.severity, "mmd2": report.mmd2, "p_value": report.p_value,
        "label_distance" if labelled else "prediction_distance": report.label_distance,
        "novel_classes": list(report.novel_classes), "accuracy_reference": report.accuracy_reference,
        "accuracy_batch": report.accuracy_batch if labelled else None, "n_batch": report.n_batch,
        "reasons": list(report.reasons),
    }
    if as_json:
        emit_json(payload)
        return
    distance = (f"label distance {report.label_distance:.3f}" if labelled
                else f"prediction distance {report.label_distance:.3f} (no labels)")
    out.print(f"{file.name} against {production.model}@{production.version}: {report.severity} "
              f"(MMD² {report.mmd2:.4g}, p {report.p_value:.3g}, {distance}, {report.n_batch} samples)", soft_wrap=True)
    if labelled:
        out.print(f"production accuracy: audit {report.accuracy_reference:.4f}, this file {report.accuracy_batch:.4f}"
                  + (f"; novel classes {list(report.novel_classes)}" if report.novel_classes else ""))
    for reason in report.reasons:
        out.print(f"  {reason}")


@app.command()
def export(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="Version: NAME@production, NAME@7, 7, production.")],
    folder: Annotated[Path, typer.Option("--out", help="Folder to write (created; whole or not at all).")],
    formats: Annotated[list[str], typer.Option(
        "--format", help="safetensors, torchscript or onnx (repeat for several).")] = ["safetensors"],  # noqa: B006
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it holds files.")] = False,
    model: ModelOption = None,
) -> None:
    """Write a version for a model server: its weights, script or graph, and model.json.
    TorchScript and ONNX are checked against the model on its audit samples first."""
    from retain.daemon.export import ExportFormat, export_version

    chosen = []
    for name in formats:
        try:
            chosen.append(ExportFormat(name))
        except ValueError:
            fail(f"--format {name}: use {', '.join(f.value for f in ExportFormat)}", code=2)
    config, registry, number = ctx.obj.lineage(model, version)
    use_threads(config)
    row = registry.version(number)
    done = export_version(row, open_artifacts(config), chosen, folder, replace=force)
    out.print(f"{row.model}@{row.version} -> {done.folder}: {', '.join([*done.files.values(), 'model.json'])}",
              soft_wrap=True)
    for form, check in done.parity.items():
        out.print(f"{form}: max abs diff {check.max_abs_diff:.3g} from the model on {check.samples} audit samples")


@app.command()
def demo(
    ctx: typer.Context,
    workdir: Annotated[Path, typer.Option("--workdir", help="Where to build the demo workspace.")] = Path(
        "retain-demo"
    ),
    threads: Annotated[int, typer.Option("--threads", help="Training threads.")] = 1,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show the daemon's log lines.")] = False,
) -> None:
    """Build a workspace on scikit-learn's digits and stream batches through the daemon."""
    from retain.demo import run_demo

    if not verbose:  # the progress display and the tables tell the story
        configure_logging("warning", ctx.obj.log_format)

    run_demo(workdir, out, threads=threads, actor=actor())
