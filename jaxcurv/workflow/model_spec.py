"""Models the commands and ``jaxcurv.audit`` take: a name of the zoo (``jaxcurv.models``), a
``package.module:factory`` path, or (from Python) a model object of any kind
:func:`jaxcurv.model_interface.as_model` accepts.

A factory path is imported and looked up when the settings are validated (before any data is
read), then called with ``num_classes=`` and the ``--model-kwargs`` once the data is known, before
anything is trained; each failure is one line naming the path. A factory whose signature takes
``rngs`` (NNX) or ``key`` (Equinox) is not called but bound (``functools.partial``), so each member
is built from its own key. Cache keys of a factory or Python model include a digest of its source
code, so editing the model recomputes what depends on it.

Jax-free at import (the command line's ``--help`` builds from the configs without jax).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import re
from typing import Any

from jaxcurv.errors import ConfigError

__all__ = ["is_factory_path", "check_factory_path", "build_model", "source_digest",
           "factory_digest", "python_label", "PYTHON_PREFIX"]

# config.model of a model object given from Python: "python: <description> [<digest>]"
PYTHON_PREFIX = "python: "
_PATH = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def is_factory_path(model: str) -> bool:
    """``model`` has the form ``package.module:attribute`` (not a zoo name)."""
    return isinstance(model, str) and ":" in model and not model.startswith(PYTHON_PREFIX)


def _resolve(path: str) -> Any:
    """The object ``package.module:attribute`` names (one-line ConfigError otherwise)."""
    if not _PATH.match(path):
        raise ConfigError(f"--model {path!r}: expected a zoo name or package.module:factory "
                          "(dotted module, a colon, the factory's name)")
    module_name, attribute = path.split(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == "equinox":
            from jaxcurv.errors import MissingDependency

            raise MissingDependency("equinox", "equinox", f"--model {path}") from None
        raise ConfigError(f"--model {path}: cannot import module {module_name!r} ({err}); is it "
                          "on PYTHONPATH?") from None
    except Exception as err:  # the user's module failed while importing
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise ConfigError(f"--model {path}: importing {module_name!r} failed: "
                          f"{type(err).__name__}: {first}") from None
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"--model {path}: module {module_name!r} has no attribute "
                              f"{attribute!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"--model {path}: {attribute!r} is a {type(obj).__name__}, not a "
                          "factory (a function or class called with num_classes=)")
    return obj


def check_factory_path(path: str) -> None:
    """Import ``path``'s module and look the factory up (nothing is called)."""
    _resolve(path)


def _binds_member_key(factory: Any) -> bool:
    """The factory builds one member from a key: it takes ``rngs`` (NNX) or ``key`` (Equinox)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return "rngs" in params or "key" in params


def build_model(model: str, num_classes: int, kwargs: dict[str, Any] | None = None) -> Any:
    """A zoo model (``models.get_model``) or the model a factory path makes, as a
    :class:`~jaxcurv.model_interface.Model`. The factory is called as
    ``factory(num_classes=num_classes, **kwargs)`` (bound instead when it takes rngs/key)."""
    from jaxcurv import models
    from jaxcurv.model_interface import as_model

    kwargs = dict(kwargs or {})
    if not is_factory_path(model):
        return as_model(models.get_model(model, num_classes, **kwargs))
    factory = _resolve(model)
    call = f"{model}(num_classes={num_classes}{''.join(f', {k}={v!r}' for k, v in kwargs.items())})"
    try:
        if _binds_member_key(factory):
            made = functools.partial(factory, num_classes=num_classes, **kwargs)
            return as_model(made)
        made = factory(num_classes=num_classes, **kwargs)
    except ConfigError as err:
        raise ConfigError(f"--model {model}: {err}") from None
    except TypeError as err:
        raise ConfigError(f"--model: calling {call} failed: {err}") from None
    try:
        return as_model(made)
    except ConfigError as err:
        raise ConfigError(f"--model {model}: the factory returned something that is no model "
                          f"({err})") from None


def _value_text(value: Any) -> str:
    """A deterministic text of a default or closure value: numbers, strings and their tuples by
    repr, anything else by its type (arrays and objects are not hashed)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return repr(value)
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_value_text(v) for v in value) + ")"
    return getattr(value, "__qualname__", type(value).__qualname__)


def _sources(obj: Any) -> list[str]:
    """The source code behind ``obj`` (a function, class, partial, module instance or an
    (init, apply) pair), as far as Python can find it, with a function's defaults and the simple
    values it closes over (a factory's closure sets its hyperparameters)."""
    if isinstance(obj, functools.partial):
        return _sources(obj.func) + [_value_text(obj.args),
                                     _value_text(sorted(obj.keywords.items()))]
    if isinstance(obj, (tuple, list)):
        return [s for part in obj for s in _sources(part)]
    target = obj if inspect.isfunction(obj) or inspect.isclass(obj) else type(obj)
    try:
        texts = [inspect.getsource(target)]
    except (OSError, TypeError):
        texts = [f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}"]
    if inspect.isfunction(target):
        cells = [c.cell_contents for c in target.__closure__ or ()]
        texts += [_value_text(target.__defaults__),
                  _value_text(sorted((target.__kwdefaults__ or {}).items())), _value_text(cells)]
    return texts


def source_digest(obj: Any) -> str:
    """sha256 (hex, 12 digits) of the source code behind a model object or factory: it keys the
    cached stages, so an edited model is trained again (modules it calls are not hashed)."""
    h = hashlib.sha256()
    for text in _sources(obj):
        h.update(text.encode())
    return h.hexdigest()[:12]


def factory_digest(path: str) -> str:
    """:func:`source_digest` of the factory a path names."""
    return source_digest(_resolve(path))


def python_label(model: Any, obj: Any) -> str:
    """``config.model`` of a model object given from Python: "python: <name> [<digest>]"."""
    return f"{PYTHON_PREFIX}{model.kind} {model.name} [{source_digest(obj)}]"
