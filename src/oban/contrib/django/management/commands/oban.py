"""``manage.py oban <command>``: every ``oban`` command (start, install, jobs, queues, retry,
web...) with the same flags, configured from the Django settings instead of ``oban.toml``."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import click
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Run an oban command (start, install, jobs, queues, stats, retry, cancel, web, ...) "
        "with the project's settings; `manage.py oban --help` lists them."
    )

    def run_from_argv(self, argv: list[str]) -> None:
        # click parses the arguments, so every flag and --help is the `oban` command's own;
        # Django's own --settings and --pythonpath (already applied) are taken out.
        arguments, django_options = _split_django_options(argv[2:])
        if os.path.basename(argv[0]) == "__main__.py":  # python -m django
            program = [sys.executable, "-m", "django", argv[1]]
            prog_name = f"python -m django {argv[1]}"
        else:
            program = [sys.executable, os.path.abspath(argv[0]), argv[1]]
            prog_name = f"{os.path.basename(argv[0])} {argv[1]}"
        main, host = _main([*program, *django_options])
        main.main(args=arguments, prog_name=prog_name, obj=host, standalone_mode=True)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("arguments", nargs=argparse.REMAINDER)

    def handle(self, *args: Any, **options: Any) -> None:
        """``call_command("oban", "jobs", "--state", "available")``."""
        arguments = [*args, *options.get("arguments", [])]
        main, host = _main([sys.executable, os.path.abspath(sys.argv[0]), "oban"])
        try:
            main.main(args=arguments, prog_name="manage.py oban", obj=host, standalone_mode=False)
        except click.ClickException as error:
            raise CommandError(error.format_message()) from error
        except click.exceptions.Exit as done:
            if done.exit_code:
                raise CommandError(f"oban exited with status {done.exit_code}") from done
        except SystemExit as done:
            if done.code:
                raise CommandError(f"oban exited with status {done.code}") from done


def _split_django_options(arguments: list[str]) -> tuple[list[str], list[str]]:
    """``arguments`` without Django's ``--settings``/``--pythonpath`` (either spelling), and
    those options, to hand on to the node processes of ``start --processes N``."""
    rest: list[str] = []
    django: list[str] = []
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        name = argument.split("=", 1)[0]
        if name in ("--settings", "--pythonpath"):
            if "=" in argument:
                django.append(argument)
            elif index + 1 < len(arguments):
                django += [argument, arguments[index + 1]]
                index += 1
            index += 1
            continue
        rest.append(argument)
        index += 1
    return rest, django


def _main(program: list[str]) -> tuple[click.Group, Any]:
    from oban.cli import Host, main

    from ...conf import load_config

    def load(**options: Any) -> Any:
        from django.core.exceptions import ImproperlyConfigured

        try:
            return load_config(**options)
        except ImproperlyConfigured as error:
            raise ValueError(str(error)) from error

    return main, Host(load=load, argv=program, worker_modules=_worker_modules())


def _worker_modules() -> list[str]:
    """The ``workers`` modules of the installed apps (imported by the app's ``ready()``)."""
    from django.apps import apps

    from ...conf import worker_module_names

    found = []
    for config in apps.get_app_configs():
        for name in worker_module_names():
            module = f"{config.name}.{name}"
            if module in sys.modules:
                found.append(module)
    return found
