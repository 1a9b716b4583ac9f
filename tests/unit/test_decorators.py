"""Unit tests for the @worker and @job decorators and worker resolution."""

from __future__ import annotations

import importlib
import inspect
import sys
import textwrap
import uuid
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from oban import Job, Oban, Worker, job, worker
from oban._instances import instances
from oban.errors import InstanceNotFoundError, ObanError, WorkerResolutionError
from oban.testing import mode
from oban.worker import UnimportableWorkerWarning, register_worker, resolve_worker, worker_name

MODULE = __name__


# --- workers defined at module level ----------------------------------------------------------


@worker(
    queue="decor_mail",
    priority=2,
    max_attempts=7,
    tags=["Mail", "urgent"],
    meta={"source": "decor"},
)
class DecorDefaultsWorker:
    async def process(self, job: Job) -> Any:
        return job.args


@worker()
class DecorPlainWorker:
    async def process(self, job: Job) -> Any:
        return None


@worker(scheduled_in=60)
class DecorScheduledWorker:
    async def process(self, job: Job) -> Any:
        return None


@worker(queue="decor_sync")
class DecorSyncWorker:
    def process(self, job: Job) -> Any:
        return ("sync", job.args["n"])


@worker()
class DecorNoProcessWorker:
    pass


@worker(oban="DecorOtherInstance")
class DecorOtherInstanceWorker:
    async def process(self, job: Job) -> Any:
        return None


class DecorOuter:
    @worker(queue="decor_nested")
    class Inner:
        async def process(self, job: Job) -> Any:
            return "inner"


DECOR_NOT_A_CLASS = 42


def decor_not_a_worker(job: Job) -> None:
    return None


@job(queue="decor_math", priority=1)
def decor_add(a: int, b: int = 2) -> int:
    return a + b


@job()
async def decor_async_add(a: int, b: int = 10) -> int:
    return a * 100 + b


@job()
def decor_varargs(first: str, *rest: int) -> tuple[str, int]:
    return (first, sum(rest))


@job()
def decor_varkw(name: str, **options: Any) -> dict[str, Any]:
    return {"name": name, **options}


@job()
def decor_kwonly(a: int, *, scale: int = 3) -> int:
    return a * scale


@job()
def decor_posonly(a: int, /, b: int) -> tuple[int, int]:
    return (a, b)


@job(oban="DecorMissingFnInstance")
def decor_other_instance_fn(x: int) -> int:
    return x


# --- @worker options --------------------------------------------------------------------------


def test_worker_options_become_job_defaults() -> None:
    job = DecorDefaultsWorker.new({"to": "ada"})

    assert isinstance(job, Job)
    assert job.worker == f"{MODULE}.DecorDefaultsWorker"
    assert job.args == {"to": "ada"}
    assert job.queue == "decor_mail"
    assert job.priority == 2
    assert job.max_attempts == 7
    assert job.tags == ["mail", "urgent"]
    assert job.meta == {"source": "decor"}
    assert job.extra == {}


def test_worker_without_options_uses_job_defaults() -> None:
    job = DecorPlainWorker.new()

    assert job.args == {}
    assert job.queue == "default"
    assert job.priority == 0
    assert job.max_attempts == 20
    assert job.tags == []
    assert job.meta == {}
    assert job.scheduled_at is None


def test_new_overrides_each_option_per_call() -> None:
    at = datetime(2031, 3, 4, 5, 6, 7, tzinfo=UTC)

    job = DecorDefaultsWorker.new(
        {"x": 1},
        queue="decor_other",
        priority=9,
        max_attempts=1,
        tags=["Other"],
        meta={"k": "v"},
        scheduled_at=at,
    )

    assert job.queue == "decor_other"
    assert job.priority == 9
    assert job.max_attempts == 1
    assert job.tags == ["other"]
    assert job.meta == {"k": "v"}
    assert job.scheduled_at == at


@pytest.mark.parametrize("option", ["scheduled_in", "schedule_in"])
def test_new_accepts_scheduled_in_per_call(option: str) -> None:
    params: dict[str, Any] = {option: timedelta(minutes=10)}
    job = DecorDefaultsWorker.new({}, **params)

    assert job.scheduled_at is not None
    expected = datetime.now(UTC) + timedelta(minutes=10)
    assert abs((job.scheduled_at - expected).total_seconds()) < 2


def test_scheduled_in_as_a_decorator_option_is_relative_to_each_new_call() -> None:
    job = DecorScheduledWorker.new()

    assert job.scheduled_at is not None
    expected = datetime.now(UTC) + timedelta(seconds=60)
    assert abs((job.scheduled_at - expected).total_seconds()) < 2


def test_per_call_overrides_do_not_change_the_worker_defaults() -> None:
    DecorDefaultsWorker.new({}, queue="elsewhere", priority=5)

    job = DecorDefaultsWorker.new()

    assert job.queue == "decor_mail"
    assert job.priority == 2


def test_mutating_a_jobs_tags_or_meta_does_not_leak_into_later_jobs() -> None:
    first = DecorDefaultsWorker.new()
    first.tags.append("leak")
    first.meta["leak"] = True

    second = DecorDefaultsWorker.new()

    assert second.tags == ["mail", "urgent"]
    assert second.meta == {"source": "decor"}


def test_invalid_per_call_overrides_raise() -> None:
    with pytest.raises(ValueError, match="priority"):
        DecorDefaultsWorker.new({}, priority=10)
    with pytest.raises(ValueError, match="queue"):
        DecorDefaultsWorker.new({}, queue="")
    with pytest.raises(TypeError, match="args"):
        DecorDefaultsWorker.new({"s": {1, 2}})


# Unknown options used to land in job.extra; now they are errors (tests/unit/test_options.py
# covers every entry point). Runtime-only data is given explicitly as extra=.
def test_unknown_per_call_options_raise_instead_of_landing_in_job_extra() -> None:
    with pytest.raises(ValueError, match="unknown option 'custom'"):
        DecorPlainWorker.new({"a": 1}, **cast(Any, {"custom": "value"}))

    job = DecorPlainWorker.new({"a": 1}, extra={"custom": "value"})

    assert job.extra == {"custom": "value"}
    assert not hasattr(job, "custom")


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"queue": ""}, "queue"),
        ({"queue": "   "}, "queue"),
        ({"queue": "q" * 128}, "queue"),
        ({"priority": 10}, "priority"),
        ({"priority": -1}, "priority"),
        ({"max_attempts": 0}, "max_attempts"),
    ],
)
def test_invalid_decorator_options_raise_value_error_at_decoration_time(
    options: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=field):

        @worker(**options)
        class Invalid:
            async def process(self, job: Job) -> None:
                return None


# A wrong type was a ValueError here; it is a TypeError naming the option, as in oban-py.
def test_decorator_option_of_the_wrong_type_is_a_type_error_at_decoration_time() -> None:
    with pytest.raises(TypeError, match="max_attempts"):

        @worker(max_attempts=cast(Any, "5"))
        class Invalid:
            async def process(self, job: Job) -> None:
                return None


def test_invalid_job_decorator_options_raise_value_error_at_decoration_time() -> None:
    with pytest.raises(ValueError, match="priority"):

        @job(priority=42)
        def invalid(a: int) -> None:
            return None


def test_tags_given_as_a_bare_string_to_the_decorator_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="tags"):

        @worker(tags=cast(Any, "urgent"))  # a type error for checkers, too
        class BareTags:
            async def process(self, job: Job) -> None:
                return None


# --- names and registration -------------------------------------------------------------------


def test_worker_name_is_module_and_qualname() -> None:
    assert DecorPlainWorker._worker_name == f"{MODULE}.DecorPlainWorker"
    assert worker_name(DecorPlainWorker) == f"{MODULE}.DecorPlainWorker"
    assert DecorPlainWorker.new().worker == f"{MODULE}.DecorPlainWorker"


def test_nested_worker_name_uses_the_qualname() -> None:
    job = DecorOuter.Inner.new()

    assert job.worker == f"{MODULE}.DecorOuter.Inner"
    assert job.queue == "decor_nested"
    assert resolve_worker(f"{MODULE}.DecorOuter.Inner") is DecorOuter.Inner


def test_resolve_worker_finds_registered_classes() -> None:
    assert resolve_worker(f"{MODULE}.DecorDefaultsWorker") is DecorDefaultsWorker
    assert resolve_worker(f"{MODULE}.DecorSyncWorker") is DecorSyncWorker


def test_register_worker_under_a_custom_name() -> None:
    class Custom:
        async def process(self, job: Job) -> None:
            return None

    name = f"decor_custom_{uuid.uuid4().hex}.Custom"

    assert register_worker(Custom, name) == name
    assert resolve_worker(name) is Custom


def test_decorated_class_satisfies_the_worker_protocol() -> None:
    assert isinstance(DecorPlainWorker(), Worker)
    assert DecorDefaultsWorker._opts == {
        "queue": "decor_mail",
        "priority": 2,
        "max_attempts": 7,
        "tags": ["Mail", "urgent"],
        "meta": {"source": "decor"},
    }
    assert DecorDefaultsWorker._oban_name == "Oban"


# --- resolution by import ---------------------------------------------------------------------

WORKER_MODULE_SOURCE = textwrap.dedent(
    """
    from oban import worker

    LOADS = []
    LOADS.append(1)

    @worker(queue="imported")
    class ImportedWorker:
        async def process(self, job):
            return "imported"

    class PlainWorker:
        def process(self, job):
            return "plain"

    class Outer:
        class Inner:
            def process(self, job):
                return "inner"

    NOT_A_CLASS = 42

    def not_a_worker(job):
        return None

    class NoProcess:
        pass
    """
)


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """A directory on sys.path and a unique module-name stem; imported modules are removed."""
    monkeypatch.syspath_prepend(str(tmp_path))
    stem = f"decor_tmp_{uuid.uuid4().hex[:10]}"
    try:
        yield tmp_path, stem
    finally:
        for name in [n for n in sys.modules if n.startswith(stem)]:
            del sys.modules[name]


@pytest.fixture
def worker_module(module_dir: tuple[Path, str]) -> str:
    path, stem = module_dir
    (path / f"{stem}.py").write_text(WORKER_MODULE_SOURCE)
    importlib.invalidate_caches()
    return stem


def test_resolve_worker_imports_a_module_that_was_not_imported(worker_module: str) -> None:
    assert worker_module not in sys.modules

    cls = resolve_worker(f"{worker_module}.ImportedWorker")

    assert worker_module in sys.modules
    module = sys.modules[worker_module]
    assert cls is module.ImportedWorker
    assert cls._worker_name == f"{worker_module}.ImportedWorker"
    assert cls.new().queue == "imported"
    # Resolving again neither re-imports nor returns a different class.
    assert resolve_worker(f"{worker_module}.ImportedWorker") is cls
    assert module.LOADS == [1]


def test_resolve_worker_after_the_module_was_imported(worker_module: str) -> None:
    module = importlib.import_module(worker_module)

    assert resolve_worker(f"{worker_module}.ImportedWorker") is module.ImportedWorker
    assert module.LOADS == [1]


def test_resolve_worker_finds_undecorated_classes_with_process(worker_module: str) -> None:
    module = importlib.import_module(worker_module)

    plain = resolve_worker(f"{worker_module}.PlainWorker")
    inner = resolve_worker(f"{worker_module}.Outer.Inner")

    assert plain is module.PlainWorker
    assert inner is module.Outer.Inner
    assert inner().process(None) == "inner"


def test_resolve_worker_missing_module_raises() -> None:
    name = f"decor_no_such_module_{uuid.uuid4().hex}.Worker"

    with pytest.raises(WorkerResolutionError, match="decor_no_such_module"):
        resolve_worker(name)


def test_resolve_worker_missing_attribute_raises(worker_module: str) -> None:
    with pytest.raises(WorkerResolutionError, match="Missing"):
        resolve_worker(f"{worker_module}.Missing")
    with pytest.raises(WorkerResolutionError, match="DecorDoesNotExist"):
        resolve_worker(f"{MODULE}.DecorDoesNotExist")


@pytest.mark.parametrize("attr", ["NOT_A_CLASS", "not_a_worker"])
def test_resolve_worker_non_class_attribute_raises(worker_module: str, attr: str) -> None:
    with pytest.raises(WorkerResolutionError, match=attr):
        resolve_worker(f"{worker_module}.{attr}")


def test_resolve_worker_non_class_attribute_of_this_module_raises() -> None:
    with pytest.raises(WorkerResolutionError):
        resolve_worker(f"{MODULE}.DECOR_NOT_A_CLASS")
    with pytest.raises(WorkerResolutionError):
        resolve_worker(f"{MODULE}.decor_not_a_worker")


def test_resolve_worker_class_without_process_raises(worker_module: str) -> None:
    with pytest.raises(WorkerResolutionError, match="NoProcess"):
        resolve_worker(f"{worker_module}.NoProcess")


def test_resolve_worker_name_without_a_module_raises() -> None:
    with pytest.raises(WorkerResolutionError):
        resolve_worker("JustAName")


def test_resolve_worker_module_failing_on_import_raises(module_dir: tuple[Path, str]) -> None:
    path, stem = module_dir
    (path / f"{stem}.py").write_text("raise RuntimeError('kaboom at import')\n")
    importlib.invalidate_caches()

    with pytest.raises(WorkerResolutionError, match="kaboom at import"):
        resolve_worker(f"{stem}.Worker")


def test_resolve_worker_module_with_a_missing_dependency_raises(
    module_dir: tuple[Path, str],
) -> None:
    path, stem = module_dir
    missing = f"{stem}_missing_dependency"
    (path / f"{stem}.py").write_text(f"import {missing}\n\nclass Worker:\n    pass\n")
    importlib.invalidate_caches()

    with pytest.raises(WorkerResolutionError, match=missing):
        resolve_worker(f"{stem}.Worker")


def test_worker_resolution_error_is_an_oban_error() -> None:
    assert issubclass(WorkerResolutionError, ObanError)
    with pytest.raises(ObanError):
        resolve_worker(f"decor_no_such_module_{uuid.uuid4().hex}.Worker")


# --- process ----------------------------------------------------------------------------------


def test_class_with_a_sync_process_is_accepted() -> None:
    assert not inspect.iscoroutinefunction(DecorSyncWorker.process)

    job = DecorSyncWorker.new({"n": 5})

    assert job.queue == "decor_sync"
    assert DecorSyncWorker().process(job) == ("sync", 5)


def test_class_without_process_gets_one_that_raises_not_implemented() -> None:
    job = DecorNoProcessWorker.new()
    # The stub ``process`` is added at runtime, so the class as written has none for mypy.
    stubbed: Any = DecorNoProcessWorker

    assert callable(stubbed.process)
    with pytest.raises(NotImplementedError, match="DecorNoProcessWorker"):
        stubbed().process(job)


# --- @job -------------------------------------------------------------------------------------


def test_job_binds_positional_and_keyword_arguments_into_args() -> None:
    job = decor_add.new(3, b=4)

    assert job.args == {"a": 3, "b": 4}
    assert job.worker == f"{MODULE}.decor_add"
    assert job.queue == "decor_math"
    assert job.priority == 1


def test_job_applies_default_arguments() -> None:
    assert decor_add.new(1).args == {"a": 1, "b": 2}
    assert decor_add.new(a=5).args == {"a": 5, "b": 2}


def test_job_handles_var_positional_arguments() -> None:
    job = decor_varargs.new("x", 1, 2, 3)

    assert job.args == {"first": "x", "rest": [1, 2, 3]}
    assert decor_varargs.new("y").args == {"first": "y", "rest": []}


def test_job_handles_var_keyword_arguments() -> None:
    job = decor_varkw.new("n", color="red", size=3)

    assert job.args == {"name": "n", "color": "red", "size": 3}


def test_job_handles_keyword_only_and_positional_only_arguments() -> None:
    assert decor_kwonly.new(2).args == {"a": 2, "scale": 3}
    assert decor_kwonly.new(2, scale=5).args == {"a": 2, "scale": 5}
    assert decor_posonly.new(1, 2).args == {"a": 1, "b": 2}


@pytest.mark.parametrize(
    ("func", "call_args", "call_kwargs", "expected"),
    [
        (decor_add, (3,), {"b": 4}, 7),
        (decor_add, (3,), {}, 5),
        (decor_varargs, ("x", 1, 2, 3), {}, ("x", 6)),
        (decor_varkw, ("n",), {"color": "red"}, {"name": "n", "color": "red"}),
        (decor_kwonly, (2,), {"scale": 5}, 10),
        (decor_posonly, (1, 2), {}, (1, 2)),
    ],
)
def test_job_worker_process_calls_the_function_with_the_bound_args(
    func: Any, call_args: tuple[Any, ...], call_kwargs: dict[str, Any], expected: Any
) -> None:
    cls = func.__oban_worker__
    job = func.new(*call_args, **call_kwargs)

    assert not inspect.iscoroutinefunction(cls.process)
    assert cls().process(job) == expected
    assert func(*call_args, **call_kwargs) == expected


async def test_async_job_binds_args_and_process_awaits_the_function() -> None:
    job = decor_async_add.new(3, b=4)
    cls = decor_async_add.__oban_worker__

    assert job.args == {"a": 3, "b": 4}
    assert decor_async_add.new(1).args == {"a": 1, "b": 10}
    assert job.worker == f"{MODULE}.decor_async_add"
    assert inspect.iscoroutinefunction(cls.process)
    assert await cls().process(job) == 304


def test_job_functions_stay_directly_callable() -> None:
    assert decor_add(3, 4) == 7
    assert decor_add(3) == 5
    assert decor_add.__name__ == "decor_add"
    assert inspect.signature(decor_add).parameters.keys() == {"a", "b"}


async def test_async_job_functions_stay_directly_callable() -> None:
    assert inspect.iscoroutinefunction(decor_async_add)
    assert await decor_async_add(2, 5) == 205


def test_job_function_worker_is_registered_and_resolvable() -> None:
    assert resolve_worker(f"{MODULE}.decor_add") is decor_add.__oban_worker__
    assert resolve_worker(f"{MODULE}.decor_async_add") is decor_async_add.__oban_worker__


@pytest.mark.parametrize(
    ("call_args", "call_kwargs"),
    [((), {}), ((1, 2, 3), {}), ((1,), {"c": 5}), ((1,), {"a": 2})],
)
def test_job_binding_errors_raise_type_error_naming_the_function(
    call_args: tuple[Any, ...], call_kwargs: dict[str, Any]
) -> None:
    with pytest.raises(TypeError, match="decor_add"):
        decor_add.new(*call_args, **call_kwargs)


async def test_job_binding_errors_on_enqueue_raise_type_error_naming_the_function() -> None:
    with pytest.raises(TypeError, match="decor_add"):
        await cast(Any, decor_add).enqueue()  # deliberately missing its argument


# --- instances --------------------------------------------------------------------------------


def test_worker_stores_the_oban_instance_name() -> None:
    assert DecorOtherInstanceWorker._oban_name == "DecorOtherInstance"
    assert decor_other_instance_fn._oban_name == "DecorMissingFnInstance"
    assert decor_add._oban_name == "Oban"


async def test_enqueue_without_the_named_instance_raises_instance_not_found() -> None:
    with pytest.raises(InstanceNotFoundError, match="DecorOtherInstance") as info:
        await DecorOtherInstanceWorker.enqueue({"a": 1})

    assert isinstance(info.value, RuntimeError)
    assert isinstance(info.value, ObanError)


async def test_job_function_enqueue_without_the_named_instance_raises() -> None:
    with pytest.raises(InstanceNotFoundError, match="DecorMissingFnInstance"):
        await decor_other_instance_fn.enqueue(1)


# --- the instance registry belongs to the model ------------------------------------------------


class FakeInstance:
    """Anything with ``enqueue`` can be registered; ``Worker.enqueue`` needs nothing more."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Job, Any]] = []

    async def enqueue(self, job: Job, *, conn: Any = None) -> Job:
        self.jobs.append((job, conn))
        job.id = len(self.jobs)
        return job


@pytest.fixture
def fake_instance() -> Iterator[FakeInstance]:
    fake = FakeInstance()
    instances["DecorFake"] = fake
    try:
        yield fake
    finally:
        instances.pop("DecorFake", None)


@worker(oban="DecorFake")
class DecorFakeWorker:
    async def process(self, job: Job) -> Any:
        return None


@job(oban="DecorFake")
def decor_fake_fn(n: int) -> int:
    return n


def test_the_facade_registry_is_the_models_registry() -> None:
    from oban.oban import _instances

    assert _instances is instances
    assert Oban._instances is instances


async def test_enqueue_finds_its_instance_in_the_registry(fake_instance: FakeInstance) -> None:
    conn = object()

    first = await DecorFakeWorker.enqueue({"a": 1}, conn=conn)
    second = await cast(Any, decor_fake_fn).enqueue(2, conn=conn)  # untyped: see JobFunction

    assert [(j.args, c) for j, c in fake_instance.jobs] == [({"a": 1}, conn), ({"n": 2}, conn)]
    assert (first.id, second.id) == (1, 2)


async def test_inline_mode_runs_the_job_without_any_instance() -> None:
    with mode("inline"):
        ran = await DecorOtherInstanceWorker.enqueue({"a": 1})
        ran_fn = await decor_other_instance_fn.enqueue(5)

    assert ran.attempt == 1
    assert ran_fn.args == {"x": 5}


# --- workers defined in a script ----------------------------------------------------------------


def _script_worker(stem: str) -> Any:
    """A worker as a script run with ``python script.py`` defines it: in ``__main__``."""

    async def process(self: Any, job: Job) -> None:
        return None

    name = f"{stem}{uuid.uuid4().hex[:8]}"
    klass = type(name, (), {"__module__": "__main__", "__qualname__": name, "process": process})
    return worker(oban="DecorFake")(klass)


async def test_a_worker_defined_in_main_warns_once_at_enqueue(fake_instance: FakeInstance) -> None:
    script = _script_worker("DecorScript")

    with pytest.warns(UnimportableWorkerWarning) as caught:
        await script.enqueue({})

    message = str(caught[0].message)
    assert f"'__main__.{script.__name__}'" in message
    assert "other processes cannot import" in message
    assert "Move it to a module" in message
    assert caught[0].filename == __file__  # points at the line that enqueued
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        await script.enqueue({})  # once per worker
    assert len(fake_instance.jobs) == 2


async def test_building_or_running_inline_a_main_worker_does_not_warn() -> None:
    script = _script_worker("DecorScriptInline")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        script.new({})
        with mode("inline"):
            await script.enqueue({})


async def test_a_worker_in_an_importable_module_does_not_warn(fake_instance: FakeInstance) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        await DecorFakeWorker.enqueue({})
