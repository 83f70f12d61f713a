"""One model interface: whatever model a user brings becomes a :class:`Model`, a pair of pure
functions, at the boundary, so that training, curvature, attacks, DP-SGD and the audit see only
variables pytrees and ``apply``.

Accepted (:func:`as_model`):

- a flax linen ``Module``: variables are linen's ``{"params": …, <state collections>}``;
  ``train=`` / ``mask=`` are passed when its ``__call__`` takes them. State collections
  (BatchNorm's ``batch_stats``) are handled: updated in training mode, fixed in inference.
- a flax NNX ``Module`` class or factory ``f(rngs=nnx.Rngs) -> nnx.Module``: each member is
  built with ``nnx.Rngs(member key)`` and split with ``nnx.split``; variables are the
  ``nnx.Param`` state as a plain nested dict (``nnx.to_pure_dict``), so K members stack and vmap.
- an Equinox module class or factory ``f(key=key) -> eqx.Module`` (the optional extra
  ``jaxcurv[equinox]``): variables are the module's floating-point arrays (``eqx.partition``);
  the module is called on one example (H, W, C), as Equinox layers are, and vmapped over the
  batch.
- pure functions ``(init, apply)``: ``init(key, x (1, H, W, C)) -> params`` and
  ``apply(params, x (B, H, W, C), *, train) -> logits (B, C)`` (``train`` passed when accepted).

An NNX or Equinox module *instance* has fixed weights: it converts (``fixed_init``: ``init``
returns its weights for every key), e.g. for the curvature of one trained model, but an ensemble
of several members refuses it (they would all start from the same weights).

Mutable state other than linen collections (NNX ``BatchStat``, Equinox ``StateIndex``) is refused
with a one-line error naming GroupNorm; DP-SGD refuses every stateful model (statistics shared
across examples break per-example clipping).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxcurv.errors import ConfigError, MissingDependency

__all__ = ["Model", "as_model", "MODEL_KINDS", "example_input"]

MODEL_KINDS = ("linen", "nnx", "equinox", "functions")

_KINDS_TEXT = ("a flax linen Module, a flax NNX Module class or factory f(rngs=...), an Equinox "
               "module class or factory f(key=...), or a pair of pure functions (init(key, x), "
               "apply(params, x, *, train))")


def _no_split(variables: Any) -> tuple[Any, dict]:
    return variables, {}


def _no_merge(params: Any, state: Any) -> Any:
    del state
    return params


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Model:
    """A model as pure functions; every model kind is converted to one by :func:`as_model`.

    ``init(key, x) -> variables`` for x of shape (1, H, W, C) (a batch of one; only its shape
    matters); ``apply(variables, x, *, train=False) -> logits`` (B, C) for x (B, H, W, C).
    ``split(variables) -> (params, state)`` separates what the optimizer trains from mutable
    state and ``merge(params, state)`` undoes it (identity and ``{}`` for stateless models);
    ``apply_stateful(variables, x, mask) -> (logits, new state)`` is the training-mode pass of a
    model with state (None: stateless). ``name``: a one-line, deterministic description (it keys
    checkpoints); ``kind``: one of MODEL_KINDS; ``fixed_init``: ``init`` ignores its key (a
    module instance was given).
    """

    init: Callable[[jax.Array, jax.Array], Any]
    apply: Callable[..., jax.Array]
    name: str
    kind: str = "functions"
    split: Callable[[Any], tuple[Any, Any]] = _no_split
    merge: Callable[[Any, Any], Any] = _no_merge
    apply_stateful: Callable[[Any, jax.Array, Any], tuple[jax.Array, Any]] | None = None
    fixed_init: bool = False

    def __repr__(self) -> str:
        return f"Model({self.kind}: {self.name})"

    def has_state(self, variables: Any) -> bool:
        """True when ``variables`` (arrays or ``jax.eval_shape`` output) hold mutable state."""
        return bool(jax.tree_util.tree_leaves(self.split(variables)[1]))

    def apply_train(self, variables: Any, x: jax.Array, mask: jax.Array | None = None
                    ) -> tuple[jax.Array, Any]:
        """Training-mode logits (B, C) and the updated state (``{}`` without state); batch
        statistics use only the rows where ``mask`` (B,) is true, when the model takes a mask."""
        if self.apply_stateful is None:
            return self.apply(variables, x, train=True), self.split(variables)[1]
        return self.apply_stateful(variables, x, mask)


def example_input(input_shape: tuple[int, ...]) -> jax.Array:
    """The ``x`` that ``Model.init`` receives for examples of shape (H, W, C): zeros
    (1, H, W, C)."""
    return jnp.zeros((1, *input_shape), jnp.float32)


# ----------------------------------------------------------------------------------------------
# signatures


def _parameters(fn: Callable) -> dict[str, inspect.Parameter] | None:
    """The parameters of ``fn`` (None when Python cannot tell, e.g. some builtins)."""
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return None


def _accepts(fn: Callable, name: str) -> bool:
    """``fn`` takes the keyword ``name`` (or any keyword)."""
    params = _parameters(fn)
    if params is None:
        return False
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return True
    p = params.get(name)
    return p is not None and p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        inspect.Parameter.KEYWORD_ONLY)


def _takes_keyword(fn: Callable, name: str) -> bool:
    """``fn`` names a parameter ``name`` (not merely **kwargs)."""
    params = _parameters(fn)
    return params is not None and name in params


def _check_callable_with(fn: Callable, keyword: str, what: str) -> None:
    """``fn(**{keyword: ...})`` binds: every other parameter has a default."""
    params = _parameters(fn)
    if params is None:
        return
    missing = [n for n, p in params.items() if n != keyword and p.default is inspect.Parameter.empty
               and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    if missing:
        raise ConfigError(f"{what} {_describe(fn)} must be callable with only {keyword}=; it also "
                          f"needs {missing}: bind them first (functools.partial or a lambda)")


def _describe(obj: Any) -> str:
    """A deterministic one-line name for a function, class or functools.partial (no addresses)."""
    if isinstance(obj, functools.partial):
        args = [repr(a) for a in obj.args] + [f"{k}={v!r}" for k, v in obj.keywords.items()]
        return f"{_describe(obj.func)}({', '.join(args)})"
    module = getattr(obj, "__module__", None) or ""
    qualname = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}.{qualname}" if module else qualname


# ----------------------------------------------------------------------------------------------
# flax linen


def _linen_name(module) -> str:
    """'MLP(num_classes=10, hidden=32, ...)': the module's class and fields on one line."""
    fields = [f for f in dataclasses.fields(module) if f.name not in ("parent", "name")]
    text = ", ".join(f"{f.name}={getattr(module, f.name)!r}" for f in fields)
    return " ".join(f"{type(module).__name__}({text})".split())


def _from_linen(module) -> Model:
    call = module.__call__
    train_kw = _accepts(call, "train")
    mask_kw = _accepts(call, "mask")

    def mode(train: bool, mask=None) -> dict:
        kw = {"train": train} if train_kw else {}
        if mask_kw and mask is not None:
            kw["mask"] = mask
        return kw

    def init(key, x):
        return dict(module.init(key, x, **mode(False)))

    def apply(variables, x, *, train: bool = False):
        return module.apply(variables, x, **mode(train))

    def split(variables):
        return variables["params"], {k: v for k, v in variables.items() if k != "params"}

    def merge(params, state):
        return {"params": params, **state}

    def apply_stateful(variables, x, mask):
        state = {k: v for k, v in variables.items() if k != "params"}
        mutable = [k for k, v in state.items() if jax.tree_util.tree_leaves(v)]
        if not mutable:
            return module.apply(variables, x, **mode(True, mask)), state
        logits, updates = module.apply(variables, x, mutable=mutable, **mode(True, mask))
        return logits, {**state, **updates}

    return Model(init, apply, _linen_name(module), "linen", split, merge, apply_stateful)


# ----------------------------------------------------------------------------------------------
# flax NNX


def _nnx_rest_error(rest, name: str) -> ConfigError:
    from flax import nnx

    kinds = sorted({type(v).__name__ for v in jax.tree_util.tree_leaves(
        rest, is_leaf=lambda v: isinstance(v, nnx.Variable))})
    return ConfigError(f"NNX model {name} holds state besides nnx.Param ({', '.join(kinds)}), "
                       "e.g. nnx.BatchNorm statistics or dropout RNGs: jaxcurv trains stateless "
                       "models; use nnx.GroupNorm (or LayerNorm) instead of BatchNorm")


def _nnx_model(abstract, name: str, init: Callable, fixed: bool) -> Model:
    """The Model of an NNX module whose abstract instance (shapes only) is ``abstract``."""
    from flax import nnx

    graphdef, _, rest = nnx.split(abstract, nnx.Param, ...)
    if jax.tree_util.tree_leaves(rest):
        raise _nnx_rest_error(rest, name)
    train_kw = _accepts(abstract.__call__, "train")

    def apply(variables, x, *, train: bool = False):
        module = nnx.merge(graphdef, variables)
        return module(x, train=train) if train_kw else module(x)

    return Model(init, apply, name, "nnx", fixed_init=fixed)


def _nnx_params(module) -> dict:
    """The nnx.Param state of ``module`` as a plain nested dict."""
    from flax import nnx

    return nnx.to_pure_dict(nnx.split(module, nnx.Param, ...)[1])


def _from_nnx_factory(factory: Callable) -> Model:
    from flax import nnx

    _check_callable_with(factory, "rngs", "an NNX model factory")
    name = _describe(factory)
    abstract = nnx.eval_shape(lambda: factory(rngs=nnx.Rngs(0)))
    if not isinstance(abstract, nnx.Module):
        raise ConfigError(f"NNX model factory {name} returned {type(abstract).__name__}, not an "
                          "nnx.Module")

    def init(key, x):
        del x  # NNX modules are built with their shapes
        return _nnx_params(factory(rngs=nnx.Rngs(key)))

    return _nnx_model(abstract, name, init, fixed=False)


def _from_nnx_instance(module) -> Model:
    weights = _nnx_params(module)
    return _nnx_model(module, f"{type(module).__qualname__} instance", lambda key, x: weights,
                      fixed=True)


# ----------------------------------------------------------------------------------------------
# Equinox (optional)


def _equinox():
    try:
        return importlib.import_module("equinox")
    except ImportError:
        raise MissingDependency("equinox", "equinox", "an Equinox model") from None


def _is_equinox_object(obj: Any) -> bool:
    """``obj`` is an instance of a class defined by Equinox or derived from one."""
    return any(c.__module__.split(".")[0] == "equinox" for c in type(obj).__mro__)


def _eqx_parts(eqx, module, name: str):
    """(params: the floating arrays, static: the rest) of an Equinox module; state is refused."""
    if any(isinstance(leaf, eqx.nn.StateIndex) for leaf in jax.tree_util.tree_leaves(
            module, is_leaf=lambda v: isinstance(v, eqx.nn.StateIndex))):
        raise ConfigError(f"Equinox model {name} holds state (eqx.nn.StateIndex, e.g. "
                          "eqx.nn.BatchNorm): jaxcurv trains stateless models; use "
                          "eqx.nn.GroupNorm (or LayerNorm) instead of BatchNorm")

    def trainable(leaf):
        return (isinstance(leaf, (jax.Array, jax.ShapeDtypeStruct))
                and jnp.issubdtype(leaf.dtype, jnp.inexact))

    return eqx.partition(module, trainable)


def _eqx_model(eqx, static, name: str, init: Callable, fixed: bool) -> Model:
    def apply(variables, x, *, train: bool = False):
        del train  # Equinox modules carry their own inference flags
        return jax.vmap(eqx.combine(variables, static))(x)

    return Model(init, apply, name, "equinox", fixed_init=fixed)


def _from_equinox_factory(factory: Callable) -> Model:
    eqx = _equinox()
    _check_callable_with(factory, "key", "an Equinox model factory")
    name = _describe(factory)
    abstract = eqx.filter_eval_shape(lambda k: factory(key=k), jax.random.PRNGKey(0))
    if not isinstance(abstract, eqx.Module):
        raise ConfigError(f"Equinox model factory {name} returned {type(abstract).__name__}, not "
                          "an eqx.Module")
    shapes, static = _eqx_parts(eqx, abstract, name)
    if any(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree_util.tree_leaves(static)):
        _, static = _eqx_parts(eqx, factory(key=jax.random.PRNGKey(0)), name)  # integer arrays
    treedef = jax.tree_util.tree_structure(shapes)

    def init(key, x):
        # rebuilt on the structure seen at conversion, so that a factory defining its module
        # class anew on each call still combines with ``static``
        del x  # Equinox modules are built with their shapes
        params = _eqx_parts(eqx, factory(key=key), name)[0]
        return jax.tree_util.tree_unflatten(treedef, jax.tree_util.tree_leaves(params))

    return _eqx_model(eqx, static, name, init, fixed=False)


def _from_equinox_instance(module) -> Model:
    eqx = _equinox()
    name = f"{type(module).__qualname__} instance"
    params, static = _eqx_parts(eqx, module, name)
    return _eqx_model(eqx, static, name, lambda key, x: params, fixed=True)


# ----------------------------------------------------------------------------------------------
# pure functions


def _from_functions(init: Callable, apply: Callable) -> Model:
    if not (callable(init) and callable(apply)):
        raise ConfigError(f"a model given as a pair must be (init, apply) functions, got "
                          f"({type(init).__name__}, {type(apply).__name__})")
    name = f"{_describe(init)}/{_describe(apply)}"
    if _accepts(apply, "train"):
        return Model(init, apply, name)

    def apply_without_train(params, x, *, train: bool = False):
        del train
        return apply(params, x)

    return Model(init, apply_without_train, name)


# ----------------------------------------------------------------------------------------------
# the boundary


def as_model(model: Any) -> Model:
    """``model`` (any kind listed in the module docstring) as a :class:`Model`; a Model is
    returned unchanged. Raises ConfigError (one line) for anything else, MissingDependency when
    an Equinox model is given without Equinox installed."""
    import flax.linen as nn
    from flax import nnx

    if isinstance(model, Model):
        return model
    if isinstance(model, nn.Module):
        return _from_linen(model)
    if isinstance(model, nnx.Module):
        return _from_nnx_instance(model)
    if _is_equinox_object(model) and not isinstance(model, type):
        return _from_equinox_instance(model)
    if isinstance(model, (tuple, list)) and len(model) == 2:
        return _from_functions(*model)
    if isinstance(model, type) and issubclass(model, nnx.Module):
        return _from_nnx_factory(model)
    if isinstance(model, str):
        raise ConfigError(f"model {model!r} is a name: build it with "
                          "jaxcurv.models.get_model(name, num_classes)")
    if callable(model) and _takes_keyword(model, "rngs"):
        return _from_nnx_factory(model)
    if callable(model) and _takes_keyword(model, "key"):
        return _from_equinox_factory(model)
    raise ConfigError(f"cannot use {type(model).__name__} {_describe(model)} as a model: pass "
                      f"{_KINDS_TEXT}")

