"""A mypy plugin that gives classes decorated with ``@worker`` their ``new``, ``enqueue``,
``enqueue_sync`` and ``relay``.

mypy never applies a class decorator's return type to the decorated name, so without help
``MyWorker.enqueue(...)`` is ``"type[MyWorker]" has no attribute "enqueue"``. Enable the
plugin in your mypy configuration:

.. code-block:: toml

    [tool.mypy]
    plugins = ["oban.mypy"]

The methods get the signatures declared on :class:`oban.decorators.WorkerClass` (the type
pyright reads from the decorator itself), so both checkers see the same API. Functions
decorated with ``@job`` need no plugin.
"""

from __future__ import annotations

from collections.abc import Callable

from mypy.nodes import Argument, FuncDef, TypeInfo, Var
from mypy.plugin import ClassDefContext, Plugin
from mypy.plugins.common import add_attribute_to_class, add_method_to_class
from mypy.types import CallableType, get_proper_type

__all__ = ["ObanPlugin", "plugin"]

_DECORATOR = "oban.decorators.worker"
_PROTOCOL = "oban.decorators.WorkerClass"
_METHODS = ("new", "enqueue", "enqueue_sync", "relay")
_ATTRIBUTES = ("_oban_name", "_opts", "_worker_name")


def _add_worker_methods(ctx: ClassDefContext) -> bool:
    symbol = ctx.api.lookup_fully_qualified_or_none(_PROTOCOL)
    protocol = symbol.node if symbol is not None else None
    if not isinstance(protocol, TypeInfo):
        return False  # oban.decorators is not analysed yet: ask to be called again
    for name in _METHODS:
        method = protocol.names[name].node
        if not isinstance(method, FuncDef):
            return False
        signature = get_proper_type(method.type)
        if not isinstance(signature, CallableType):
            return False
        # Built from the signature alone (a FuncDef read from mypy's cache has no argument
        # nodes). Skip the protocol's ``self``: the method becomes a classmethod.
        parts = zip(signature.arg_names, signature.arg_kinds, signature.arg_types, strict=True)
        arguments = [
            Argument(Var(name or f"__arg{index}", typ), typ, None, kind, pos_only=name is None)
            for index, (name, kind, typ) in enumerate(parts)
            if index > 0
        ]
        added = add_method_to_class(
            ctx.api, ctx.cls, name, arguments, signature.ret_type, is_classmethod=True
        )
        # ``**params: Unpack[JobOptions]``: the flag that makes the TypedDict's keys keywords.
        if isinstance(added, FuncDef) and isinstance(added.type, CallableType):
            added.type = added.type.copy_modified(unpack_kwargs=signature.unpack_kwargs)
    for name in _ATTRIBUTES:
        attribute = protocol.names[name].node
        if not isinstance(attribute, Var) or attribute.type is None:
            return False
        add_attribute_to_class(ctx.api, ctx.cls, name, attribute.type, is_classvar=True)
    return True


class ObanPlugin(Plugin):
    """Adds ``new``/``enqueue``/``enqueue_sync``/``relay`` classmethods to ``@worker``
    classes."""

    def get_class_decorator_hook_2(self, fullname: str) -> Callable[[ClassDefContext], bool] | None:
        return _add_worker_methods if fullname == _DECORATOR else None


def plugin(version: str) -> type[Plugin]:
    """mypy's entry point."""
    return ObanPlugin
