"""The `conveyor` command, assembled: every command and group, in the order `--help` lists
them.

Database-direct commands: the processes (processes.py), looking after an installation
(admin.py) and `enqueue` (jobs.py). Client commands over the REST API: `login`/`logout`
(login.py), `submit`, `limits`, `jobs` and `schedules` (client.py), `workflows`
(workflows.py). Building the command line imports nothing of the server; each command
imports what it runs.
"""

from __future__ import annotations

import typer

from conveyor.cli import admin, client, jobs, login, processes, workflows

app = typer.Typer(
    name="conveyor",
    help="Conveyor: a durable job-processing service.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for command in (
    processes.run,
    processes.api,
    processes.worker,
    processes.scheduler,
    processes.results,
    admin.migrate,
    admin.config,
    jobs.enqueue,
    admin.info,
    login.login,
    login.logout,
    client.submit,
    client.limits,
    admin.version,
):
    app.command()(command)
app.add_typer(client.jobs_app, name="jobs", no_args_is_help=True)
app.add_typer(workflows.workflows_app, name="workflows", no_args_is_help=True)
app.add_typer(client.schedules_app, name="schedules", no_args_is_help=True)
app.add_typer(admin.users_app, name="users")


def main() -> None:
    app()
