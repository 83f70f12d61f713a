"""The workflow layer: the one override parser, the content-keyed stage cache, timing, the
environment echo, the attacks' input checks, and the layering rule that primitives never import
the workflow or the command line."""

import ast
import re
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from jaxcurv import workflow
from jaxcurv.workflow import AuditConfig, StageCache, Timer, apply_overrides, fingerprint

ROOT = Path(__file__).resolve().parents[1]
PRIMITIVES = ("curvature", "data", "models", "model_interface", "training", "ensemble",
              "memorization", "mia", "privacy", "adversarial", "optim")


# ----------------------------------------------------------------------------------------------
# overrides


@dataclasses.dataclass(frozen=True)
class _Settings:
    name: str = "small"
    members: int = 16
    rate: float = 0.1
    limit: int | None = None
    datasets: tuple[str, ...] = ("digits",)
    edges: tuple[float, ...] = (0.0, 1.0)
    options: dict = dataclasses.field(default_factory=dict)
    flag: bool = False
    epsilon: float | None = None


def test_overrides_are_typed_from_the_dataclass_fields():
    base = _Settings()
    cfg = apply_overrides(base, ["members=8", "rate=1", "limit=null", 'datasets=["a", "b"]',
                                 "edges=[0, 0.5, 1]", 'options={"width": 8}', "flag=true",
                                 "name=full", "epsilon=2"])
    assert (cfg.members, cfg.rate, cfg.limit, cfg.datasets) == (8, 1.0, None, ("a", "b"))
    assert isinstance(cfg.rate, float) and isinstance(cfg.epsilon, float)
    assert cfg.edges == (0.0, 0.5, 1.0) and all(isinstance(e, float) for e in cfg.edges)
    assert cfg.options == {"width": 8} and cfg.flag is True and cfg.name == "full"
    assert base == _Settings()  # the original is untouched
    assert apply_overrides(base, {"members": 4}).members == 4
    assert apply_overrides(base, ["limit=5"]).limit == 5
    assert apply_overrides(AuditConfig(), ["dp-epsilon=4", "models=8"]).dp_epsilon == 4.0


@pytest.mark.parametrize("item, match", [
    ("nope=1", "unknown setting"), ("members=abc", "integer"), ("members=2.5", "integer"),
    ("members=true", "integer"), ("datasets=digits", "list"), ("members", "KEY=VALUE"),
    ("=3", "KEY"), ("flag=1", "true or false"), ("rate=\"x\"", "number"),
    ("options=[1]", "JSON object"), ("name=3", "string"),
])
def test_bad_overrides_name_the_setting(item, match):
    with pytest.raises(ValueError, match=match):
        apply_overrides(_Settings(), [item])


def test_overrides_need_a_dataclass_instance():
    with pytest.raises(ValueError, match="dataclass"):
        apply_overrides({"members": 1}, ["members=2"])
    with pytest.raises(ValueError, match="list of KEY=VALUE"):
        apply_overrides(_Settings(), "members=2")


def test_audit_config_validation_messages():
    AuditConfig().validate()
    for changes, message in [({"models": 5}, "--models must be >= 6"),
                             ({"epochs": 0}, "--epochs must be an integer >= 1"),
                             ({"fraction": 1.0}, "--fraction"),
                             ({"optimizer": "adagrad"}, "--optimizer"),
                             ({"dp_epsilon": 1.0, "model": "resnet18"}, "resnet18_gn"),
                             ({"max_examples": 10}, "--max-examples must be >= 2")]:
        with pytest.raises(ValueError, match=message):
            dataclasses.replace(AuditConfig(), **changes).validate()
    assert AuditConfig().progress is False  # the library is quiet unless asked


# ----------------------------------------------------------------------------------------------
# stage cache


def test_fingerprint_is_content_keyed():
    a = np.arange(6, dtype=np.float32)
    assert fingerprint(a, {"x": 1}) == fingerprint(a.copy(), {"x": 1})
    assert fingerprint(a) != fingerprint(a.astype(np.float64))     # dtype matters
    assert fingerprint(a) != fingerprint(a.reshape(2, 3))           # shape matters
    assert fingerprint(a) != fingerprint(a + 1)                     # content matters
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint(AuditConfig()) != fingerprint(AuditConfig(seed=1))


def test_ensemble_fingerprint_covers_every_parameter():
    from types import SimpleNamespace

    from jaxcurv.workflow import ensemble_fingerprint

    rng = np.random.default_rng(0)
    variables = {"params": {f"layer{i}": {"kernel": rng.normal(size=(2, 3, 3))}
                            for i in range(12)}}  # more than the eight leaves once hashed
    ens = SimpleNamespace(model="m", masks=np.ones((2, 5), bool), member_ids=np.arange(2),
                          variables=variables)
    base = ensemble_fingerprint(ens)
    middle = {"params": {**variables["params"], "layer6": {
        "kernel": variables["params"]["layer6"]["kernel"] + 1e-7}}}
    assert ensemble_fingerprint(SimpleNamespace(**{**vars(ens), "variables": middle})) != base
    assert ensemble_fingerprint(SimpleNamespace(**{**vars(ens), "member_ids": np.arange(1, 3)})
                                ) != base
    assert ensemble_fingerprint(SimpleNamespace(**vars(ens))) == base


def test_stage_cache_round_trip_and_resume(tmp_path):
    timer = Timer()
    lines = []
    cache = StageCache(tmp_path, timer=timer, log=lines.append)
    calls = []
    rng = np.random.default_rng(0)
    arrays = {"x": rng.normal(size=(3, 4)), "mask": rng.random(5) < 0.5,
              "label": np.arange(5, dtype=np.int32)}

    def compute():
        calls.append(1)
        return arrays

    key = {"data": fingerprint(arrays["x"]), "probes": 10}
    first = cache.run("stage", key, compute)
    assert timer.seconds["stage"] != "cached" and len(calls) == 1
    again = StageCache(tmp_path, timer=timer).run("stage", dict(key), compute)
    assert len(calls) == 1 and timer.seconds["stage"] == "cached"
    for name, value in arrays.items():
        np.testing.assert_array_equal(first[name], value)
        np.testing.assert_array_equal(again[name], value)
        assert again[name].dtype == value.dtype
    # another key is another entry, computed once
    cache.run("stage", {**key, "probes": 5}, compute)
    assert len(calls) == 2 and len(list(tmp_path.glob("stage-*.npz"))) == 2
    assert any("cached" in line for line in lines) is False  # the first cache logged no hit
    assert not list(tmp_path.glob("*.tmp.npz"))


def test_stage_cache_recomputes_a_bad_or_foreign_file(tmp_path):
    lines = []
    cache = StageCache(tmp_path, log=lines.append)
    calls = []

    def compute():
        calls.append(1)
        return {"v": np.arange(4.0)}

    path = cache.path("s", "k")
    cache.run("s", "k", compute)
    good = path.read_bytes()
    path.write_bytes(good[:40])          # truncated
    np.testing.assert_array_equal(cache.run("s", "k", compute)["v"], np.arange(4.0))
    assert len(calls) == 2
    flipped = bytearray(good)
    flipped[good.index(np.arange(4.0).tobytes()) + 9] ^= 0x10  # a flipped bit: Bad CRC-32
    path.write_bytes(bytes(flipped))
    np.testing.assert_array_equal(cache.run("s", "k", compute)["v"], np.arange(4.0))
    assert len(calls) == 3
    np.savez(path, v=np.zeros(4), __key__=np.asarray(fingerprint("k")),
             __checksum__=np.asarray("0" * 64))          # tampered content
    np.testing.assert_array_equal(cache.run("s", "k", compute)["v"], np.arange(4.0))
    np.savez(path, v=np.zeros(4), __key__=np.asarray(fingerprint("other")),
             __checksum__=np.asarray(fingerprint({"v": np.zeros(4)})))  # another key's file
    np.testing.assert_array_equal(cache.run("s", "k", compute)["v"], np.arange(4.0))
    assert len(calls) == 5
    notices = [line for line in lines if "failed verification" in line]
    assert len(notices) == 4 and all(str(path) in n and "recomputing" in n for n in notices)
    assert "unreadable: BadZipFile" in notices[1] and "checksum" in notices[2]
    assert cache.load("s", "never stored") is None
    with pytest.raises(ValueError, match="file name"):
        cache.path("a/b", "k")
    path.write_bytes(b"")
    with pytest.warns(RuntimeWarning, match="failed verification"):  # without a log: a warning
        assert StageCache(tmp_path).load("s", "k") is None


def _chunk_arrays(i: int) -> dict:
    rng = np.random.default_rng(i)
    return {"x": rng.normal(size=(2, 3)), "n": np.full(2, i, np.int32)}


def test_run_chunked_equals_the_whole_stage_and_resumes_after_a_kill(tmp_path):
    truth = {k: np.concatenate([_chunk_arrays(i)[k] for i in range(4)]) for k in ("x", "n")}
    computed = []

    def chunk(i, kill_at=None):
        if i == kill_at:
            raise KeyboardInterrupt
        computed.append(i)
        return _chunk_arrays(i)

    lines = []
    cache = StageCache(tmp_path, log=lines.append)
    key = {"data": "d", "probes": 3}
    with pytest.raises(KeyboardInterrupt):
        cache.run_chunked("curv", key, 4, lambda i: chunk(i, kill_at=2))
    assert computed == [0, 1] and cache.load("curv", key) is None
    assert cache.describe_resume({"curv": key, "other": key}) == (
        f"resuming from {tmp_path}: curv 2 of 4 chunks")
    chunk_files = sorted(tmp_path.glob("curv-*.chunk*.npz"))
    chunk_files[1].write_bytes(chunk_files[1].read_bytes()[:-30])  # damaged: recomputed
    computed.clear()
    result = cache.run_chunked("curv", key, 4, chunk)
    assert computed == [1, 2, 3]
    assert "curv: resuming from 1 of 4 cached chunks" in lines
    assert sum("failed verification" in line for line in lines) == 1
    for k, v in truth.items():
        np.testing.assert_array_equal(result[k], v)
        assert result[k].dtype == v.dtype
    assert not list(tmp_path.glob("*.chunk*")) and not list(tmp_path.glob("*.tmp.npz"))
    computed.clear()
    again = cache.run_chunked("curv", key, 4, chunk)  # one verified entry now
    assert computed == [] and lines[-1] == "curv: cached"
    np.testing.assert_array_equal(again["x"], truth["x"])
    assert cache.describe_resume({"curv": key}) == f"resuming from {tmp_path}: curv cached"
    assert cache.describe_resume({"curv": {"data": "other"}}) is None
    with pytest.raises(ValueError, match="same names"):
        cache.run_chunked("bad", key, 2, lambda i: {"x": np.zeros(1)} if i else {"y": np.zeros(1)})


def test_run_chunked_shows_a_progress_bar_only_when_asked(tmp_path, capsys):
    chunk = lambda i: {"v": np.array([float(i)])}
    StageCache(tmp_path / "quiet").run_chunked("curv", "k", 3, chunk)
    assert "curv" not in capsys.readouterr().err
    result = StageCache(tmp_path / "bar", progress=True).run_chunked("curv", "k", 3, chunk)
    err = capsys.readouterr().err
    assert "curv:" in err and "/3 " in err
    np.testing.assert_array_equal(result["v"], [0.0, 1.0, 2.0])


def test_non_finite_results_are_refused_and_not_cached(tmp_path):
    cache = StageCache(tmp_path)
    nan = {"trace": np.array([1.0, np.nan, np.inf]), "stderr": np.array([np.nan, 0.0, 0.0])}
    with pytest.raises(ValueError, match=r"stage curvature produced 3 non-finite values \(in "
                                         r"stderr, trace\)"):
        cache.run("curvature", "k", lambda: nan, require_finite=True)
    assert not list(tmp_path.glob("*.npz"))
    with pytest.raises(ValueError, match="produced 2 non-finite values"):
        cache.run("curvature", "k", lambda: nan, require_finite=("trace",))
    ok = cache.run("curvature", "k", lambda: {**nan, "trace": np.zeros(3)},
                   require_finite=("trace",))  # NaN allowed where not required finite
    assert np.isnan(ok["stderr"][0])
    with pytest.raises(ValueError, match="did not produce"):
        cache.run("other", "k", lambda: nan, require_finite=("missing",))
    chunks = lambda i: {"v": np.array([np.nan if i == 1 else 1.0])}
    with pytest.raises(ValueError, match=r"stage z \(chunk 1\) produced 1 non-finite"):
        cache.run_chunked("z", "k", 3, chunks, require_finite=True)
    assert len(list(tmp_path.glob("z-*.chunk0000of0003.npz"))) == 1  # the finite chunk stays
    assert not list(tmp_path.glob("z-*.chunk0001*"))


def test_clean_temporary_removes_killed_writes(tmp_path):
    cache = StageCache(tmp_path)
    cache.run("s", "k", lambda: {"v": np.zeros(2)})
    stale = tmp_path / "s-0123.999.tmp.npz"
    stale.write_bytes(b"partial")
    assert cache.clean_temporary() == [stale] and not stale.exists()
    assert cache.load("s", "k") is not None


def test_timer_adds_up_stages_and_marks_cached():
    timer = Timer()
    with timer("a"):
        pass
    with timer("a"):
        pass
    timer.mark("b", "cached")
    total = timer.total()
    assert total["a"] >= 0 and total["b"] == "cached" and total["total"] >= 0


def test_environment_echo_is_json():
    env = json.loads(json.dumps(workflow.environment()))
    assert {"python", "jax", "backend", "devices", "device_count", "cpu_count"} <= set(env)
    assert env["backend"] in workflow.describe_device(env)


# ----------------------------------------------------------------------------------------------
# attacks and the compatibility module


def test_attack_scores_check_their_inputs():
    rng = np.random.default_rng(0)
    k, n, c = 6, 20, 3
    logits = rng.normal(size=(k, 1, n, c))
    labels = rng.integers(0, c, n)
    masks = np.zeros((k, n), bool)
    masks[: k // 2] = True
    masks = np.stack([rng.permutation(col) for col in masks.T], axis=1)
    curv = rng.random((k, n)) + 0.1
    test_logits, test_labels = rng.normal(size=(k, 7, c)), rng.integers(0, c, 7)
    scores = workflow.attack_scores(logits, labels, masks, curv, curv, test_logits, test_labels)
    assert set(scores) == set(workflow.MIA_ATTACKS)
    assert all(s.shape == (k, n) for s in scores.values())
    with pytest.raises(ValueError, match="logits"):
        workflow.attack_scores(logits[:, 0], labels, masks, curv, None, test_logits, test_labels)
    with pytest.raises(ValueError, match="curvature"):
        workflow.attack_scores(logits, labels, masks, curv[:, :5], None, test_logits, test_labels)
    with pytest.raises(ValueError, match="test_logits"):
        workflow.attack_scores(logits, labels, masks, curv, None, test_logits[:2], test_labels)


def test_zero_order_fallback_is_one_warning_with_a_count_matching_a_naive_loop():
    from jaxcurv.data import subset_masks
    from jaxcurv.workflow.attacks import zero_order_fallback_examples

    rng = np.random.default_rng(1)
    k, m, n, c = 10, 6, 60, 3
    masks = subset_masks(n, k, seed=0)      # balanced, as in the audit
    sub = masks[:m]
    naive = sum(any(not (np.delete(sub[:, i], t).any() and (~np.delete(sub[:, i], t)).any())
                    for t in range(m)) for i in range(n))
    assert zero_order_fallback_examples(sub) == naive > 0
    logits = rng.normal(size=(k, 1, n, c))
    labels = rng.integers(0, c, n)
    curv = rng.random((k, n)) + 0.1
    test_logits, test_labels = rng.normal(size=(k, 7, c)), rng.integers(0, c, 7)
    with pytest.warns(UserWarning) as record:
        scores = workflow.attack_scores(logits, labels, masks, curv, curv[:m], test_logits,
                                        test_labels)
    zero = [str(w.message) for w in record if "zero-order attacks" in str(w.message)]
    assert len(zero) == 1 and f"{naive} of {n} example(s)" in zero[0]
    assert not any("zero_order" in str(w.message) and "leave_one_model_out" in str(w.message)
                   for w in record)
    assert scores["zero_order_lr"].shape == (m, n)


# ----------------------------------------------------------------------------------------------
# layering


def _sources(name: str) -> list[Path]:
    base = ROOT / "jaxcurv" / name
    if base.is_dir():
        return sorted(base.rglob("*.py"))
    return [base.with_suffix(".py")] if base.with_suffix(".py").is_file() else []


def _resolve(module: str, is_package: bool, level: int, base: str) -> str:
    package = module.split(".") if is_package else module.split(".")[:-1]
    parent = ".".join(package[: len(package) - level + 1])
    return f"{parent}.{base}" if base else parent


def _lazy_targets(call: ast.Call, module: str) -> dict[str, str]:
    """{attribute: module} of a ``lazy_names(__name__, {...}, globals())`` call in ``module``."""
    out: dict[str, str] = {}

    def walk(node):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if key is None:
                    walk(value)
                elif isinstance(key, ast.Constant) and isinstance(value, ast.Constant):
                    target = value.value
                    out[key.value] = (f"{module}.{key.value}" if target == "" else
                                      module + target if target.startswith(".") else target)
        elif isinstance(node, ast.DictComp) and isinstance(node.generators[0].iter, ast.Tuple):
            for element in node.generators[0].iter.elts:
                if isinstance(node.value, ast.Constant) and isinstance(element, ast.Constant):
                    target = node.value.value
                    out[element.value] = (f"{module}.{element.value}" if target == "" else
                                          module + target if target.startswith(".") else target)
            # a comprehension over names with a computed target: {name: ".x" for name in ...}

    if len(call.args) >= 2:
        walk(call.args[1])
    return out


def _imports(source: str, module: str, is_package: bool = False):
    """(imported, from_names, lazy) of the source of ``module``: absolute names of every module
    an import names (statements at any depth, relative ones resolved, and imports by string:
    ``importlib.import_module("…")`` / ``__import__("…")``, and any string that is a dotted
    jaxcurv module name, as in a table of names to import later); the (package, name) pairs of
    ``from package import name``; and the package's lazily served names (``lazy_names``)."""
    imported, from_names, lazy = set(), set(), {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = _resolve(module, is_package, node.level, base)
            imported.add(base)
            from_names.update((base, alias.name) for alias in node.names)
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and re.fullmatch(r"jaxcurv(\.\w+)+", node.value)):
            imported.add(node.value)  # a module named by a string (a table of lazy imports)
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if (name in ("import_module", "__import__") and node.args
                    and isinstance(node.args[0], ast.Constant)):
                imported.add(node.args[0].value)
            elif name == "lazy_names":
                lazy.update(_lazy_targets(node, module))
    return imported, from_names, lazy


def _imported_modules(source: str, module: str) -> set[str]:
    """Every module name the source of ``module`` reaches by an import of any form, including
    ``from package import name`` as ``package.name`` and a package's lazily served modules."""
    is_package = module.endswith(".__init__")
    module = module.removesuffix(".__init__")
    imported, from_names, lazy = _imports(source, module, is_package)
    return imported | {f"{base}.{name}" for base, name in from_names} | set(lazy.values())


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _import_graph() -> dict[str, set[str]]:
    """module → the jaxcurv modules its execution imports. ``from package import name`` goes to
    ``package.name`` when that is a module (or to the module the package serves it from lazily)
    and to the package's own ``__init__``; a package's lazy names are not edges of the package
    itself (they load only when asked for)."""
    sources = {}
    for path in (ROOT / "jaxcurv").rglob("*.py"):
        name, is_package = _module_name(path)
        sources[name] = _imports(path.read_text(), name, is_package)
    lazy = {name: found[2] for name, found in sources.items()}
    graph = {}
    for name, (imported, from_names, _) in sources.items():
        edges = {m for m in imported if m in sources}
        for base, attr in from_names:
            target = f"{base}.{attr}"
            if target in sources:
                edges.add(target)
            elif attr in lazy.get(base, {}):
                edges.add(lazy[base][attr])
        graph[name] = edges - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _file_imports(path: Path) -> set[str]:
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return _imported_modules(path.read_text(), module)


@pytest.mark.parametrize("name", PRIMITIVES)
def test_primitives_never_import_the_workflow_or_the_cli(name):
    files = _sources(name)
    assert files, f"jaxcurv/{name} is listed as a primitive but has no source"
    for path in files:
        bad = {m for m in _file_imports(path) if m.startswith(("jaxcurv.workflow", "jaxcurv.cli"))}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_the_layering_check_resolves_every_import_form():
    source = ("import jaxcurv.workflow\nfrom jaxcurv import cli\nfrom ..workflow import audit\n"
              "from . import signals\nimport importlib\n"
              "def f():\n    from jaxcurv.workflow.cache import StageCache\n"
              "def g():\n    return importlib.import_module('jaxcurv.workflow.proxy_scores')\n"
              "h = __import__('jaxcurv.report')\n"
              "MOVED = {'proxies': 'jaxcurv.workflow.proxy_scores'}\n")
    names = _imported_modules(source, "jaxcurv.mia.metrics")
    assert {"jaxcurv.workflow", "jaxcurv.cli", "jaxcurv.workflow.audit", "jaxcurv.mia.signals",
            "jaxcurv.workflow.cache", "jaxcurv.workflow.proxy_scores", "jaxcurv.report"} <= names
    assert "jaxcurv.mia.signals" in _imported_modules("from . import signals",
                                                      "jaxcurv.mia.__init__")
    assert "jaxcurv.workflow" in _imported_modules("from .. import workflow",
                                                   "jaxcurv.mia.__init__")
    lazy = ("__getattr__, __dir__ = lazy_names(__name__, {'run': '.audit', "
            "**{n: '' for n in ('experiment',)}}, globals())")
    assert {"jaxcurv.workflow.audit", "jaxcurv.workflow.experiment"} <= _imported_modules(
        lazy, "jaxcurv.workflow.__init__")


def test_the_cycle_check_finds_a_lazy_cycle():
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_graph_has_no_cycle():
    graph = _import_graph()
    assert "jaxcurv.privacy.accounting" in graph["jaxcurv.privacy.plan"]  # function-level imports
    assert _cycles(graph) == []


def test_no_module_under_jaxcurv_imports_the_workflow_except_the_command_line():
    allowed = {"cli.py", "__main__.py", "__init__.py"}
    for path in sorted((ROOT / "jaxcurv").rglob("*.py")):
        rel = path.relative_to(ROOT / "jaxcurv")
        if rel.parts[0] == "workflow" or str(rel) in allowed:
            continue
        bad = {m for m in _file_imports(path) if m.startswith("jaxcurv.workflow")}
        assert not bad, f"{rel} imports {sorted(bad)}"


def test_curvature_outlier_members_matches_a_naive_loop_and_warns():
    from jaxcurv.workflow import sections

    rng = np.random.default_rng(0)
    sq = rng.lognormal(3.0, 1.0, (6, 80))
    assert sections.curvature_outlier_members(sq) == []
    sq[4] *= 1e5                                   # one member out of line (SGD member 7 on CIFAR)
    sq[1, :10] = np.nan                            # missing values do not count
    medians = [np.median(np.abs(row[np.isfinite(row)])) for row in sq]
    naive = [k for k, m in enumerate(medians) if m > 1e3 * np.median(medians)]
    assert sections.curvature_outlier_members(sq) == naive == [4]
    assert sections.curvature_outlier_members(np.zeros((3, 5))) == []
    out = {"accuracy": {"test_mean": 0.9, "test_min": 0.88, "test_per_member": [0.9] * 6,
                        "train_in_mean": 1.0},
           "mia": {"metrics": [{"attack": "loss", "auroc": 0.7, "auroc_ci": [0.6, 0.8]}]},
           "curvature": {"outlier_members": [4]}}
    warnings = sections.sanity_warnings(out, num_classes=10)
    assert len(warnings) == 1 and "member(s) [4]" in warnings[0] and "tr(H²)" in warnings[0]
    assert sections.sanity_warnings({**out, "curvature": {"outlier_members": []}}, 10) == []


def test_a_member_that_fit_far_less_than_the_others_is_warned_about():
    """Naive loop: member fit = its accuracy on its own subset; lagging = below half the
    median member's fit; the audit's sanity warnings name it with its fit."""
    from jaxcurv.workflow import sections

    rng = np.random.default_rng(1)
    masks = rng.random((6, 50)) < 0.5
    correct = rng.random((6, 50)) < 0.95
    correct[3] = rng.random(50) < 0.2                # member 3 did not train
    fit = sections.member_fit(correct, masks)
    naive = [correct[k][masks[k]].mean() for k in range(6)]
    np.testing.assert_allclose(fit, naive)
    assert sections.lagging_member_ids(fit) == [
        k for k in range(6) if naive[k] < 0.5 * np.median(naive)] == [3]
    assert sections.lagging_member_ids([np.nan, np.nan]) == []
    assert sections.lagging_member_ids([0.0, 0.0, 0.0]) == []   # all at zero: nothing to lag
    assert sections.lagging_member_ids([0.9, np.nan, 0.3, 0.95]) == [2]
    out = {"accuracy": {"test_mean": 0.9, "test_min": 0.88, "test_per_member": [0.9] * 6,
                        "train_in_mean": 0.95, "train_in_per_member": fit,
                        "lagging_members": sections.lagging_member_ids(fit)},
           "mia": {"metrics": [{"attack": "loss", "auroc": 0.7, "auroc_ci": [0.6, 0.8]}]}}
    (warning,) = sections.sanity_warnings(out, num_classes=10)
    assert warning.startswith(f"member(s) [3] fit only {fit[3]:.2f}") and "--seed" in warning
    fine = {**out, "accuracy": {**out["accuracy"], "lagging_members": []}}
    assert sections.sanity_warnings(fine, 10) == []


def test_poor_fit_warning_names_the_settings_that_fix_it():
    from jaxcurv.workflow import AuditConfig, sections, with_preset

    out = {"accuracy": {"test_mean": 0.4, "test_min": 0.35, "test_per_member": [0.4] * 6,
                        "train_in_mean": 0.705},
           "mia": {"metrics": [{"attack": "loss", "auroc": 0.7, "auroc_ci": [0.6, 0.8]}]}}
    cifar = AuditConfig(dataset="cifar10", model="cnn")  # augmentation on for RGB by default
    advice = sections.fit_advice(cifar, rgb=True)
    (warning,) = sections.sanity_warnings(out, 10, advice=advice)
    assert "0.705" in warning and "--augment off" in warning
    assert "--preset cifar10-cpu" in warning and "--epochs" in warning
    preset = with_preset(AuditConfig, {"preset": "cifar10-cpu"})
    assert "--augment off" not in sections.fit_advice(preset, rgb=True)  # already off
    assert "--preset" not in sections.fit_advice(preset, rgb=True)
    digits = sections.fit_advice(AuditConfig(), rgb=False)
    assert "--augment" not in digits and "--preset" not in digits and "--epochs" in digits
    fitted = {**out, "accuracy": {**out["accuracy"], "train_in_mean": 0.995}}
    assert sections.sanity_warnings(fitted, 10, advice=advice) == []


def test_cifar10_cpu_preset_is_the_measured_recipe_and_flags_override_it():
    from jaxcurv.workflow import AuditConfig, PRESETS, with_preset

    preset = PRESETS["cifar10-cpu"]
    config = with_preset(AuditConfig, {"preset": "cifar10-cpu"})
    config.validate()
    for name, value in preset.items():
        if name != "description":
            assert getattr(config, name) == value, name
    assert config.augment is False and config.dataset == "cifar10"
    assert config.max_examples >= 2 * config.models
    override = with_preset(AuditConfig, {"preset": "cifar10-cpu", "epochs": 3, "models": 6})
    assert (override.epochs, override.models, override.batch_size) == (3, 6, preset["batch_size"])


def test_memorization_bins_hold_the_values_their_labels_say():
    """Figure 9's table: negative memorization (noise around 0) has a bin of its own, and a bin
    that also holds clipped values is labelled by them, so each bin's mean mem (the point drawn)
    lies within [mem_lo, mem_hi]; the pairs per bin match a naive loop over cross-fitted mem."""
    from jaxcurv.data import subset_masks
    from jaxcurv.memorization import cross_fitted_memorization
    from jaxcurv.workflow.attacks import MEMORIZATION_EDGES

    rng = np.random.default_rng(3)
    masks = subset_masks(400, 8, seed=0)
    hard = rng.random(400) < 0.4                   # examples the OUT members often miss
    correct = np.where(masks, rng.random((8, 400)) < 0.9,
                       rng.random((8, 400)) < np.where(hard, 0.3, 0.85))
    scores = rng.normal(size=(8, 400)) + masks
    mem = cross_fitted_memorization(correct, masks).ravel()
    rows = workflow.mia_by_memorization(scores, masks, correct, min_examples=1)
    assert rows[0]["mem_lo"] == -1.0 and rows[0]["mem_hi"] == 0.0 and np.any(mem < 0)
    for row in rows:
        assert row["mem_lo"] <= row["mem_center"] <= row["mem_hi"], row
        last = row["mem_hi"] == MEMORIZATION_EDGES[-1]
        sel = (mem >= row["mem_lo"]) & ((mem <= row["mem_hi"]) if last else (mem < row["mem_hi"]))
        assert row["pairs"] == int(sel.sum())
    clipped = workflow.mia_by_memorization(scores, masks, correct, min_examples=1,
                                           edges=(0.0, 0.1, 0.3, 0.5, 0.7, 1.0))
    first = clipped[0]
    assert first["mem_lo"] == pytest.approx(np.nanmin(mem)) and first["mem_lo"] < 0
    assert first["mem_lo"] <= first["mem_center"] <= first["mem_hi"] == 0.1


def _environment_module_at(root):
    """environment.py copied to ``root/jaxcurv/workflow/`` and imported from there."""
    import importlib.util
    import shutil

    target = root / "jaxcurv" / "workflow" / "environment.py"
    target.parent.mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[1] / "jaxcurv" / "workflow" / "environment.py",
                target)
    (root / "jaxcurv" / "__init__.py").write_text("")
    spec = importlib.util.spec_from_file_location(f"env_copy_{abs(hash(root))}", target)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _git(cwd, *args):
    import subprocess

    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd,
                   check=True, capture_output=True)


def test_source_commit_names_only_a_checkout_of_jaxcurv(tmp_path):
    """An installed copy inside another git repository (a pyenv clone holding site-packages)
    has no jaxcurv commit; a checkout that tracks the package has one."""
    other = tmp_path / "pyenv"
    other.mkdir()
    (other / "README").write_text("another project")
    _git(other, "init", "-q")
    _git(other, "add", "README")
    _git(other, "commit", "-q", "-m", "x")
    installed = _environment_module_at(other / "site-packages")
    assert installed.source_commit() is None
    checkout = tmp_path / "checkout"
    module = _environment_module_at(checkout)
    _git(checkout, "init", "-q")
    _git(checkout, "add", ".")
    _git(checkout, "commit", "-q", "-m", "x")
    commit = module.source_commit()
    assert commit is not None and len(commit) == 12 and "+" not in commit


def test_an_experiment_summary_records_the_commit_it_started_from(tmp_path, monkeypatch):
    """A run that spans a commit names the code it started with; the commit at its end is kept
    beside it, and only when the two differ."""
    import importlib

    from jaxcurv.workflow import experiment as X

    env_module = importlib.import_module("jaxcurv.workflow.environment")
    commits = iter(["aaaaaaaaaaaa", "bbbbbbbbbbbb", "bbbbbbbbbbbb", "bbbbbbbbbbbb"])
    monkeypatch.setattr(env_module, "source_commit", lambda: next(commits))
    config = X.ExperimentConfig(name="tiny", out=str(tmp_path / "run"))
    out = X.output_dir(config, "demo")                  # start: aaaa
    summary = X.finish(out, "demo", config, {}, timer=Timer(), notes=[], lines=[])   # end: bbbb
    assert summary["environment"]["commit"] == "aaaaaaaaaaaa"
    assert summary["environment"]["commit_at_end"] == "bbbbbbbbbbbb"
    out = X.output_dir(config, "demo")                  # start: bbbb
    summary = X.finish(out, "demo", config, {}, timer=Timer(), notes=[], lines=[])   # end: bbbb
    assert summary["environment"]["commit"] == "bbbbbbbbbbbb"
    assert "commit_at_end" not in summary["environment"]
