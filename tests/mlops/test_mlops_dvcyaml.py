"""dvc.yaml, params.yaml and mlops/ agree: paths, params keys, stage modules, code deps."""

from __future__ import annotations

import ast
import importlib
import os
import re
from modulefinder import ModuleFinder
from pathlib import Path

import yaml

from mlops import pipeline

ROOT = Path(__file__).resolve().parents[2]


def _load(name):
    return yaml.safe_load((ROOT / name).read_text())


def _paths(entries):
    return {next(iter(e)) if isinstance(e, dict) else e for e in entries or []}


#: Imported by every stage, computing nothing a stage writes: MLflow bookkeeping and where the
#: running stack keeps its state. dvc.yaml leaves them out so that they rerun nothing.
BOOKKEEPING = {"mlops/tracking.py", "dinoseg/runtime.py"}


def _no_code(path):
    """An ``__init__.py`` holding only a docstring and constants (``__version__``)."""
    body = ast.parse(path.read_text()).body
    return path.name == "__init__.py" and all(
        isinstance(node, (ast.Expr, ast.Assign)) and isinstance(node.value, ast.Constant)
        for node in body
    )


def stage_code(name, root=ROOT):
    """Files of the project (mlops/, dinoseg/) that ``python -m mlops.<name>`` imports, at module
    level or inside functions, followed to the end; relative to ``root``."""
    finder = ModuleFinder(path=[str(root)])  # only the project: torch & co. are not followed
    finder.run_script(str(root / "mlops" / f"{name}.py"))
    files = {Path(m.__file__) for m in finder.modules.values() if m.__file__}
    return {f.relative_to(root).as_posix() for f in files if f.is_relative_to(root)}


def _covers(dep, path):
    return path == dep or path.startswith(dep.rstrip("/") + "/")


def test_stage_code_follows_imports_inside_functions(tmp_path):
    (tmp_path / "mlops").mkdir()
    (tmp_path / "dinoseg" / "sub").mkdir(parents=True)
    (tmp_path / "mlops" / "s.py").write_text("def run():\n    from dinoseg.sub import a\n")
    (tmp_path / "dinoseg" / "__init__.py").write_text('"""doc."""\n')
    (tmp_path / "dinoseg" / "sub" / "__init__.py").write_text("")
    (tmp_path / "dinoseg" / "sub" / "a.py").write_text("import json\nfrom dinoseg import b\n")
    (tmp_path / "dinoseg" / "b.py").write_text("X = 1\n")
    (tmp_path / "dinoseg" / "c.py").write_text("X = 2\n")
    assert stage_code("s", tmp_path) == {
        "mlops/s.py", "dinoseg/__init__.py", "dinoseg/sub/__init__.py", "dinoseg/sub/a.py",
        "dinoseg/b.py",
    }  # fmt: skip


def test_deps_name_the_code_each_stage_runs():
    """A change to any module a stage imports reruns the stage; no code dep is stale."""
    for name, stage in _load("dvc.yaml")["stages"].items():
        code = {
            f for f in stage_code(name)
            if f not in BOOKKEEPING and not _no_code(ROOT / f)
        }  # fmt: skip
        deps = [d for d in stage["deps"] if d.split("/")[0] in ("mlops", "dinoseg", "serving")]
        missing = sorted(f for f in code if not any(_covers(d, f) for d in deps))
        assert not missing, f"dvc.yaml stage {name}: add deps covering {missing}"
        stale = [d for d in deps if not any(_covers(d, f) for f in code)]
        assert not stale, f"dvc.yaml stage {name}: deps {stale} are code it does not import"
        assert len(set(deps)) == len(deps), f"dvc.yaml stage {name}: a dep is listed twice"


def test_stages_match_the_code():
    stages = _load("dvc.yaml")["stages"]
    assert list(stages) == ["prepare", "teacher", "distill", "train", "heads", "memory",
                            "evaluate", "register"]
    for name, stage in stages.items():
        assert stage["cmd"] == f"python -m mlops.{name}"
        module = importlib.import_module(f"mlops.{name}")
        assert callable(module.run)
        assert f"mlops/{name}.py" in stage["deps"]
    outs = {n: _paths(s.get("outs")) | _paths(s.get("metrics")) for n, s in stages.items()}
    assert outs["prepare"] >= {str(pipeline.TRAIN_SET), str(pipeline.EPISODES)}
    assert str(pipeline.TEACHER) in outs["teacher"]
    assert outs["distill"] == {str(pipeline.DISTILLED)}
    assert str(pipeline.MODEL) in outs["train"] and str(pipeline.EVAL) in outs["evaluate"]
    assert str(pipeline.DISTILLED) in stages["train"]["deps"]
    assert outs["heads"] >= {str(pipeline.HEAD)} and outs["memory"] >= {str(pipeline.MEMORY)}
    for product in (pipeline.MODEL, pipeline.HEAD, pipeline.MEMORY):
        assert str(product) in stages["evaluate"]["deps"] and str(product) in stages[
            "register"]["deps"]  # fmt: skip
    # annotators' labels never rerun the segmenter's stages (the head and memory learn them)
    for name in ("teacher", "distill", "train"):
        assert str(pipeline.TRAIN_SET) not in stages[name]["deps"]


def fresh_checkout_lacks(dvcfile: str) -> list[str]:
    """Deps of ``dvcfile`` inside the project that a fresh checkout lacks: no file git tracks is
    at or under them and no stage of the file writes them (``dvc repro`` stops on a missing dep
    before running anything)."""
    import subprocess

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.splitlines()  # fmt: skip
    stages = _load(dvcfile)["stages"]
    params = yaml.safe_load(((ROOT / dvcfile).parent / "params.yaml").read_text())

    def value(match: re.Match[str]) -> str:  # dvc's ${section.key} templating
        node = params
        for part in match.group(1).split("."):
            node = node[part]
        return str(node)

    made = {o for s in stages.values() for o in _paths(s.get("outs")) | _paths(s.get("metrics"))}
    missing = []
    for stage in stages.values():
        base = (ROOT / dvcfile).parent / stage.get("wdir", ".")
        for dep in (re.sub(r"\$\{([\w.]+)\}", value, d) for d in _paths(stage.get("deps"))):
            rel = Path(os.path.relpath((base / dep).resolve(), ROOT.resolve())).as_posix()
            if rel.startswith("..") or any(_covers(m, dep) for m in made):
                continue  # outside the project (shared data) or written by a stage
            if not any(f == rel or f.startswith(rel + "/") for f in tracked):
                missing.append(rel)
    return sorted(set(missing))


def test_a_fresh_checkout_has_every_dep_inside_the_project():
    for dvcfile in ("dvc.yaml", "aerial/dvc.yaml"):
        assert fresh_checkout_lacks(dvcfile) == [], f"{dvcfile}: track these (e.g. a .gitkeep)"


def test_every_params_key_exists():
    params = _load("params.yaml")
    for stage in _load("dvc.yaml")["stages"].values():
        for key in stage.get("params", []):
            node = params
            for part in key.split("."):
                assert part in node, f"{key} is listed in dvc.yaml but not in params.yaml"
                node = node[part]


def test_params_sections_resolve():
    from dinoseg.config import resolve
    from dinoseg.distill.loop import DistillConfig
    from dinoseg.train.loop import TrainConfig
    from mlops.evaluate import EvaluateConfig
    from mlops.heads import config as heads_config
    from mlops.memory import MemoryConfig
    from mlops.prepare import PrepareConfig
    from mlops.register import RegisterConfig

    params = _load("params.yaml")
    for cls, section in ((PrepareConfig, "prepare"), (DistillConfig, "distill"),
                         (TrainConfig, "train"), (EvaluateConfig, "evaluate"),
                         (RegisterConfig, "register"), (MemoryConfig, "memory")):
        resolve(cls, params[section])  # unknown keys or bad values raise
    heads = {**params["heads"], "warm_start": False}
    cfg, warm = heads_config(heads)
    assert not warm and cfg.kind == "linear" and cfg.data == ("data/train_set:train",)
    assert params["register"]["model_name"] == "dinoseg-segmenter"


def test_pipeline_run_id_follows_the_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(pipeline.RUN_ENV, raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text("prepare: {base: base, labels: labels}\n")
    (tmp_path / "labels").mkdir()
    first = pipeline.pipeline_run_id()
    assert first == pipeline.pipeline_run_id() and len(first) == 12
    (tmp_path / "labels/a.png").write_bytes(b"x")
    second = pipeline.pipeline_run_id()
    assert second != first
    (tmp_path / "params.yaml").write_text("prepare: {base: base, labels: labels}\ntrain: {lr: 0}\n")
    assert pipeline.pipeline_run_id() not in (first, second)
    monkeypatch.setenv(pipeline.RUN_ENV, "given")
    assert pipeline.pipeline_run_id() == "given"
