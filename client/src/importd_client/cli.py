"""importctl: importd from a shell. Exit codes: 0 done (or queued), 1 the job did not
fully succeed, 2 bad usage, 3 the server refused the request or could not be reached."""

from __future__ import annotations

import contextlib
import json
import re
import sys
import threading
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from rich import filesize
from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from importd.v1 import import_service_pb2 as pb
from importd_client import Client, ImportdError, Job, entry_status_name, job_status_name
from importd_client._async_client import DEFAULT_TARGET

# A source with a scheme (https://, s3://, file://) is a URI the server reads itself.
_URI = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://")
EXIT_NOT_SUCCEEDED = 1
EXIT_REFUSED = 3
COUNTS = ("created", "updated", "unchanged", "skipped", "failed", "deleted")
JOB_STATUSES = click.Choice(
    ["queued", "running", "succeeded", "partially_succeeded", "failed", "cancelled"],
    case_sensitive=False,
)
ENTRY_STATUSES = click.Choice(
    ["pending", "created", "updated", "unchanged", "skipped", "failed", "deleted", "not_processed"],
    case_sensitive=False,
)
MODES = click.Choice(["insert", "upsert", "update", "delete"], case_sensitive=False)

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


class _Settings:
    def __init__(
        self, target: str, token: str | None, as_json: bool, timeout: float, tls_ca: Path | None
    ) -> None:
        self.target = target
        self.token = token
        self.as_json = as_json
        self.timeout = timeout
        self.tls_ca = tls_ca

    def client(self, context: click.Context) -> Client:
        credentials = (
            grpc.ssl_channel_credentials(root_certificates=self.tls_ca.read_bytes())
            if self.tls_ca is not None
            else None
        )
        client = Client(
            self.target, token=self.token, timeout=self.timeout, credentials=credentials
        )
        context.call_on_close(client.close)
        return client


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ImportdError as error:
            err.print(f"[red]error:[/red] {error}", markup=True)
            sys.exit(EXIT_REFUSED)


@click.group(cls=_Group)
@click.option(
    "--target",
    envvar="IMPORTD_TARGET",
    default=DEFAULT_TARGET,
    show_default=True,
    help="host:port of importd (env IMPORTD_TARGET).",
)
@click.option("--token", envvar="IMPORTD_TOKEN", help="Bearer token (env IMPORTD_TOKEN).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--timeout", default=30.0, show_default=True, help="Deadline of each call (s).")
@click.option(
    "--tls-ca",
    envvar="IMPORTD_TLS_CA",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Use TLS, trusting this CA certificate (env IMPORTD_TLS_CA).",
)
@click.version_option(package_name="importd-client")
@click.pass_context
def main(
    context: click.Context,
    target: str,
    token: str | None,
    as_json: bool,
    timeout: float,
    tls_ca: Path | None,
) -> None:
    """importctl: start, follow and inspect importd bulk-import jobs."""
    context.obj = _Settings(target, token, as_json, timeout, tls_ca)


@main.command()
@click.argument("source")
@click.option("--type", "-t", "import_type", required=True, help="Import type, e.g. contacts.")
@click.option("--mode", "-m", default="upsert", show_default=True, type=MODES)
@click.option(
    "--format",
    "file_format",
    type=click.Choice(["csv", "jsonl", "xlsx", "ods"], case_sensitive=False),
    help="Default: from the file's first bytes and its name.",
)
@click.option("--dry-run", is_flag=True, help="Validate and count; write nothing.")
@click.option("--max-errors", type=int, help="Fail the job when more rows than this fail.")
@click.option("--all-or-nothing", is_flag=True, help="Commit nothing unless every row is valid.")
@click.option(
    "--revertible/--not-revertible",
    default=True,
    help="Record what the writes replace, so `revert` can undo the job (default: yes).",
)
@click.option("--delimiter", default="", help="CSV delimiter (default: sniffed).")
@click.option(
    "--encoding", default="", help="e.g. utf-8, utf-16, windows-1252 (default: detected)."
)
@click.option("--sheet", default="", help="Workbooks: the sheet (default: the first visible).")
@click.option(
    "--map",
    "column_map",
    multiple=True,
    help="'File header=column', e.g. 'E-Mail Address=email'.",
)
@click.option("--label", "labels", multiple=True, help="key=value, for your own references.")
@click.option("--watch", "-w", is_flag=True, help="Follow the job to its end.")
@click.pass_context
def start(
    context: click.Context,
    source: str,
    import_type: str,
    mode: str,
    file_format: str | None,
    dry_run: bool,
    max_errors: int | None,
    all_or_nothing: bool,
    revertible: bool,
    delimiter: str,
    encoding: str,
    sheet: str,
    column_map: tuple[str, ...],
    labels: tuple[str, ...],
    watch: bool,
) -> None:
    """Import SOURCE: a local file, or a URI the server reads itself (https://…, s3://…,
    file://…)."""
    settings: _Settings = context.obj
    uri = source if _URI.match(source) else None
    if uri is None and not Path(source).is_file():
        raise click.BadParameter(f"no file at {source}", param_hint="SOURCE")
    client = settings.client(context)
    # Watching, the job is followed from its first byte while this thread sends the file.
    follower = _Follower(settings, client, None if uri else Path(source).stat().st_size)
    job = client.start_import(
        None if uri else Path(source),
        source_uri=uri,
        import_type=import_type,
        mode=mode,
        file_format=file_format,
        dry_run=dry_run,
        max_errors=max_errors,
        all_or_nothing=all_or_nothing,
        revertible=revertible,
        delimiter=delimiter,
        encoding=encoding,
        sheet=sheet,
        column_map=_column_map(column_map),
        labels=_labels(labels),
        on_created=follower.begin if watch else None,
    )
    if watch:
        job = follower.end(job)
    else:
        _show_job(settings, job.job)
    _exit_for(job)


@main.command()
@click.argument("job_id")
@click.pass_context
def get(context: click.Context, job_id: str) -> None:
    """Show a job's status and counts."""
    settings: _Settings = context.obj
    job = settings.client(context).get_job(job_id)
    _show_job(settings, job.job)
    _exit_for(job)


@main.command()
@click.argument("job_id")
@click.option(
    "--file",
    "fixed",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Upload this file (e.g. the job's export, corrected) instead of the rows importd holds.",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=click.Choice(["failed", "not_processed", "skipped"], case_sensitive=False),
    help="Retry the rows in these statuses (default: failed, not processed, and the skipped"
    " rows a retry can change).",
)
@click.option("--mode", "-m", type=MODES, help="Default: the job's mode.")
@click.option("--watch", "-w", is_flag=True, help="Follow the new job to its end.")
@click.pass_context
def retry(
    context: click.Context,
    job_id: str,
    fixed: Path | None,
    statuses: tuple[str, ...],
    mode: str | None,
    watch: bool,
) -> None:
    """Start a new job over the rows of the ended job JOB_ID that did not go in, or over a
    corrected FILE linked to it (its importd_row column names each row's row in JOB_ID)."""
    settings: _Settings = context.obj
    client = settings.client(context)
    if fixed is None:
        job = client.retry_job(job_id, statuses=statuses, mode=mode)
    elif statuses:
        raise click.UsageError("--status chooses rows importd holds; it cannot go with --file")
    else:
        parent = client.get_job(job_id).job
        job = client.start_import(
            fixed, import_type=parent.import_type, mode=mode or parent.mode, retry_of=job_id
        )
    if watch:
        _follow(settings, job)
    else:
        _show_job(settings, job.job)
    _exit_for(job)


@main.command(name="list")
@click.option("--status", "statuses", multiple=True, type=JOB_STATUSES, help="Only these.")
@click.option("--type", "import_type", help="Only jobs of this import type.")
@click.option(
    "--filter",
    "job_filter",
    default="",
    help='AIP-160, e.g. \'labels.batch = "x" AND create_time > "2026-11-01T00:00:00Z"\''
    " or 'retry_of = \"<job id>\"'.",
)
@click.option("--limit", default=20, show_default=True, help="At most this many jobs.")
@click.pass_context
def list_jobs(
    context: click.Context,
    statuses: tuple[str, ...],
    import_type: str | None,
    job_filter: str,
    limit: int,
) -> None:
    """List your jobs, newest first."""
    settings: _Settings = context.obj
    jobs = settings.client(context).list_jobs(
        statuses=statuses, import_type=import_type, filter=job_filter, page_size=min(limit, 1000)
    )
    shown = [job.job for _, job in zip(range(limit), jobs, strict=False)]
    if settings.as_json:
        _print_json([_as_dict(job) for job in shown])
        return
    table = Table("id", "type", "mode", "status", "file", "rows", "created", "failed")
    for job in shown:
        table.add_row(
            job.id,
            job.import_type,
            _mode_name(job.mode),
            job_status_name(job),
            job.file_name,
            str(job.total_rows),
            str(job.created_count),
            str(job.failed_count),
        )
    out.print(table)


@main.command()
@click.argument("job_id")
@click.pass_context
def watch(context: click.Context, job_id: str) -> None:
    """Follow a job to its end with a live progress bar."""
    settings: _Settings = context.obj
    job = settings.client(context).get_job(job_id)
    _follow(settings, job)
    _exit_for(job)


@main.command(name="watch-jobs")
@click.option("--status", "statuses", multiple=True, type=JOB_STATUSES, help="Only these.")
@click.option("--type", "import_type", help="Only jobs of this import type.")
@click.option("--label", "labels", multiple=True, help="key=value; only jobs carrying it.")
@click.pass_context
def watch_jobs(
    context: click.Context,
    statuses: tuple[str, ...],
    import_type: str | None,
    labels: tuple[str, ...],
) -> None:
    """Follow every change to your jobs, one line each, until interrupted: first the queued
    and running ones, then each change as it happens."""
    settings: _Settings = context.obj
    changes = settings.client(context).watch_jobs(
        statuses=statuses, import_type=import_type, labels=_labels(labels)
    )
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a watch ends
        for job in changes:
            if settings.as_json:
                _print_json(_as_dict(job))
                continue
            rows = f"{job.processed_rows}/{job.total_rows}" if job.HasField("total_rows") else "-"
            out.print(
                f"{job.update_time.ToDatetime():%H:%M:%S} {job.id} {job_status_name(job):<19}"
                f" {job.import_type} {rows} {job.file_name}"
            )


@main.command()
@click.argument("job_id")
@click.option("--status", "statuses", multiple=True, type=ENTRY_STATUSES, help="Only these.")
@click.option("--limit", default=50, show_default=True, help="At most this many entries.")
@click.pass_context
def entries(context: click.Context, job_id: str, statuses: tuple[str, ...], limit: int) -> None:
    """Show a job's rows and what happened to each."""
    settings: _Settings = context.obj
    job = settings.client(context).get_job(job_id)
    shown = list(zip(range(limit), job.entries(statuses, page_size=min(limit, 1000)), strict=False))
    if settings.as_json:
        _print_json([_as_dict(entry) for _, entry in shown])
        return
    table = Table("row", "line", "status", "key", "errors")
    for _, entry in shown:
        problems = "; ".join(
            f"{e.field + ': ' if e.field else ''}{e.message} ({e.value!r}) [{e.code}]"
            for e in entry.errors
        )
        table.add_row(
            str(entry.row_number),
            str(entry.line_number),
            entry_status_name(entry),
            entry.key,
            problems or entry.note,
        )
    out.print(table)


@main.command()
@click.argument("job_id")
@click.pass_context
def cancel(context: click.Context, job_id: str) -> None:
    """Cancel a queued or running job."""
    settings: _Settings = context.obj
    job = settings.client(context).get_job(job_id)
    job.cancel()
    _show_job(settings, job.job)


@main.command()
@click.argument("job_id")
@click.option("--no-wait", is_flag=True, help="Print the revert job and return at once.")
@click.option("--request-id", default=None, help="Idempotency key (default: a new one).")
@click.pass_context
def revert(context: click.Context, job_id: str, no_wait: bool, request_id: str | None) -> None:
    """Undo an ended job: a new job deletes the rows it created, restores the rows it
    updated and inserts again the rows it deleted; rows changed since are skipped, with a
    note. Follows the revert to its end unless --no-wait."""
    settings: _Settings = context.obj
    job = settings.client(context).revert_job(job_id, request_id=request_id)
    if no_wait:
        _show_job(settings, job.job)
        return
    _follow(settings, job)
    _exit_for(job)


@main.command()
@click.argument("job_id")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--status",
    "statuses",
    multiple=True,
    type=ENTRY_STATUSES,
    help="Default: failed, skipped, not_processed.",
)
@click.option(
    "--all", "all_rows", is_flag=True, help="Every row of the file, in order, with its status."
)
@click.pass_context
def export(
    context: click.Context, job_id: str, output: Path, statuses: tuple[str, ...], all_rows: bool
) -> None:
    """Download the rows that were not imported (or, with --all, every row with its status),
    as CSV to fix and import again."""
    settings: _Settings = context.obj
    if all_rows and statuses:
        raise click.UsageError("--all exports every row: it cannot be combined with --status")
    job = settings.client(context).get_job(job_id)
    path = job.download_report(output) if all_rows else job.download_not_imported(output, statuses)
    if settings.as_json:
        _print_json({"path": str(path), "bytes": path.stat().st_size})
    else:
        out.print(f"wrote {path} ({path.stat().st_size} bytes)")


@main.command()
@click.pass_context
def types(context: click.Context) -> None:
    """List the import types the server knows."""
    settings: _Settings = context.obj
    import_types = settings.client(context).list_import_types()
    if settings.as_json:
        _print_json([_as_dict(t) for t in import_types])
        return
    for import_type in import_types:
        table = Table("column", "type", "required", "rules", title=_type_title(import_type))
        for column in import_type.columns:
            table.add_row(
                column.name, column.type, "yes" if column.required else "", _rules(column)
            )
        out.print(table)


class _Follower:
    """Follows a job on a thread of its own from the moment it exists (`begin`, called by
    the client), while `start_import` still sends the file on the calling thread."""

    def __init__(self, settings: _Settings, client: Client, file_size: int | None) -> None:
        self._settings = settings
        self._client = client
        self._file_size = file_size
        self._job_id: str | None = None
        self._thread: threading.Thread | None = None
        self._followed: Job | None = None
        self._error: BaseException | None = None

    def begin(self, job_id: str) -> None:
        if self._thread is None:
            self._job_id = job_id
            self._thread = threading.Thread(
                target=self._run, args=(job_id,), name="importctl-follow", daemon=True
            )
            self._thread.start()

    def _run(self, job_id: str) -> None:
        try:
            self._followed = self._client.get_job(job_id)
            _follow(self._settings, self._followed, self._file_size)
        except BaseException as error:  # raised again on the main thread, by `end`
            self._error = error

    def end(self, started: Job) -> Job:
        """The job followed to its end; `started` is what start_import returned."""
        if self._thread is not None:
            self._thread.join()
            if self._error is not None:
                raise self._error
            assert self._followed is not None
            if started.id == self._job_id:
                return self._followed
        # No early id (an older server), or a retried start that made another job.
        _follow(self._settings, started, self._file_size)
        return started


class _Detail(ProgressColumn):
    """The upload's bytes, MB/s and ETA, or the job's rows, rows/s and ETA."""

    def render(self, task: Task) -> Text:
        if not task.fields["upload"]:
            return Text(task.fields["text"])
        total = filesize.decimal(int(task.total)) if task.total else "?"
        speed = f"{filesize.decimal(int(task.speed))}/s" if task.speed else "-"
        eta = _clock(task.time_remaining) if task.time_remaining is not None else "-"
        received = filesize.decimal(int(task.completed))
        return Text(f"{received} of {total}  {speed}  ETA {eta}  {task.fields['text']}")


# The stages of a job whose file is still being received, as the upload bar names them.
UPLOAD_STAGES = {pb.JOB_STAGE_RECEIVING: "uploading", pb.JOB_STAGE_STAGING: "staging"}


def _follow(settings: _Settings, job: Job, file_size: int | None = None) -> None:
    """Shows the job's progress until it ends: while its file is received an upload bar
    (bytes, MB/s, ETA; `file_size` if known), then, from the moment its total rows are
    known, the job's own bar."""
    if settings.as_json:
        for event in job.progress():
            _print_json(_as_dict(event))
        return
    with Progress(
        TextColumn("{task.description}"), BarColumn(), _Detail(), console=err, transient=True
    ) as bar:
        upload: TaskID | None = None
        task: TaskID | None = None
        if file_size is not None:  # this process is sending the file
            upload = bar.add_task("uploading", total=file_size, upload=True, text="")
        for event in job.progress():
            current = event.job
            receiving = current.stage in UPLOAD_STAGES
            if receiving and upload is None:
                upload = bar.add_task("uploading", total=None, upload=True, text="")
            if upload is not None:
                bar.update(
                    upload,
                    description=UPLOAD_STAGES.get(current.stage, "uploaded"),
                    completed=current.received_bytes,
                    total=file_size if receiving else current.received_bytes or file_size,
                    text=f"{current.staged_rows:,} rows read",
                )
            if receiving and not current.HasField("total_rows"):
                continue
            if task is None:
                task = bar.add_task(job_status_name(current), upload=False, text="")
            remaining = event.estimated_time_remaining.ToTimedelta()
            total = current.total_rows if current.HasField("total_rows") else None
            bar.update(
                task,
                description=job_status_name(current),
                total=total,
                completed=current.processed_rows,
                text=f"{current.processed_rows:,}/{'?' if total is None else f'{total:,}'}"
                f" rows  {current.rows_per_second:,.0f} rows/s  ETA "
                + (_clock(remaining) if event.HasField("estimated_time_remaining") else "-"),
            )
    _show_job(settings, job.job)


def _clock(remaining: float | timedelta) -> str:
    """A duration as h:mm:ss, whole seconds."""
    seconds = remaining.total_seconds() if isinstance(remaining, timedelta) else remaining
    return str(timedelta(seconds=round(seconds)))


def _show_job(settings: _Settings, job: pb.Job) -> None:
    if settings.as_json:
        _print_json(_as_dict(job))
        return
    table = Table(show_header=False, box=None)
    table.add_row("job", job.id)
    table.add_row("status", job_status_name(job) + (" (dry run)" if job.dry_run else ""))
    table.add_row("import", f"{job.import_type}, {_mode_name(job.mode)}, {job.file_name or '-'}")
    if job.retry_of:
        table.add_row("retry of", job.retry_of)
    rows = f"{job.processed_rows} of {job.total_rows}" if job.HasField("total_rows") else "-"
    table.add_row("rows", rows)
    for name in COUNTS:
        table.add_row(name, str(getattr(job, f"{name}_count")))
    if job.not_processed_count:
        table.add_row("not processed", str(job.not_processed_count))
    if job.revert_of:
        table.add_row("reverts", job.revert_of)
    if job.reverted_by:
        table.add_row("reverted by", job.reverted_by)
    if job.HasField("dialect"):
        table.add_row("read as", _dialect(job.dialect))
    if job.HasField("error"):
        table.add_row("error", f"[red]{job.error.message}[/red]")
    out.print(table)
    if job.error_summary:
        errors = Table("error", "column", title="row errors")
        errors.add_column("count", justify="right")
        for counted in job.error_summary:
            errors.add_row(counted.code, counted.field or "(row)", str(counted.count))
        out.print(errors)


def _exit_for(job: Job) -> None:
    if job.done and not job.succeeded:
        sys.exit(EXIT_NOT_SUCCEEDED)


def _labels(pairs: Iterable[str]) -> dict[str, str]:
    labels = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator:
            raise click.UsageError(f"--label {pair!r} must be key=value")
        labels[key] = value
    return labels


def _column_map(pairs: Iterable[str]) -> dict[str, str]:
    mapped = {}
    for pair in pairs:
        header, separator, column = pair.rpartition("=")  # a header may hold "=", no column
        if not separator:
            raise click.UsageError(f"--map {pair!r} must be 'file header=column'")
        mapped[header] = column
    return mapped


def _dialect(dialect: pb.Dialect) -> str:
    """How the file was read, e.g. "CSV, utf-8, delimiter ';' (detected: delimiter)"."""
    parts = [str(pb.FileFormat.Name(dialect.format)).removeprefix("FILE_FORMAT_")]
    if dialect.encoding:
        parts.append(dialect.encoding)
    if dialect.delimiter:
        parts.append(f"delimiter {dialect.delimiter!r}")
    if dialect.sheet:
        parts.append(f"sheet {dialect.sheet!r}")
    if dialect.gzip:
        parts.append("gzip")
    detected = f" (detected: {', '.join(dialect.detected)})" if dialect.detected else ""
    return ", ".join(parts) + detected


def _mode_name(mode: Any) -> str:
    return str(pb.ImportMode.Name(mode)).removeprefix("IMPORT_MODE_")


def _type_title(import_type: pb.ImportType) -> str:
    modes = ", ".join(_mode_name(m) for m in import_type.modes)
    key = ", ".join(import_type.key_columns)
    return f"{import_type.name} (table {import_type.table}, key {key}; modes {modes})"


def _rules(column: pb.ColumnSpec) -> str:
    rules = []
    if column.HasField("max_length"):
        rules.append(f"max length {column.max_length}")
    if column.HasField("pattern"):
        rules.append(f"matches {column.pattern}")
    if column.HasField("min"):
        rules.append(f"min {column.min}")
    if column.HasField("max"):
        rules.append(f"max {column.max}")
    if column.values:
        rules.append("one of " + ", ".join(column.values))
    if column.HasField("default"):
        rules.append(f"default {column.default}")
    if column.aliases:
        rules.append("also " + ", ".join(column.aliases))
    return "; ".join(rules)


def _as_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _print_json(value: object) -> None:
    click.echo(json.dumps(value, indent=None, separators=(",", ":")))


if __name__ == "__main__":
    main()
