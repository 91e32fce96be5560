"""The wheel ships the Hydra configs: an installed package composes its own defaults, from any directory."""
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel built from this checkout, unpacked: what ``pip install .`` puts into site-packages."""
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"  # a copy: setuptools builds in place, and a stale build/ would hide a missing file
    shutil.copytree(ROOT / "torchrl_dreamerv3", source / "torchrl_dreamerv3",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "-w", str(out), str(source)], capture_output=True, text=True)
    if build.returncode != 0:
        pytest.fail(f"pip wheel failed:\n{build.stderr[-2000:]}")
    wheel = next(out.glob("torchrl_dreamerv3-*.whl"))
    site = out / "site"
    zipfile.ZipFile(wheel).extractall(site)
    return site


def test_the_wheel_holds_every_config(installed):
    shipped = {p.relative_to(installed / "torchrl_dreamerv3" / "configs").as_posix()
               for p in (installed / "torchrl_dreamerv3" / "configs").rglob("*.yaml")}
    in_checkout = {p.relative_to(ROOT / "torchrl_dreamerv3" / "configs").as_posix()
                   for p in (ROOT / "torchrl_dreamerv3" / "configs").rglob("*.yaml")}
    assert "config.yaml" in shipped and "env/cartpole.yaml" in shipped and "algo/dreamerv2.yaml" in shipped
    assert shipped == in_checkout


def test_the_installed_package_composes_its_config_from_another_directory(installed, tmp_path):
    script = ("import torchrl_dreamerv3 as p; from torchrl_dreamerv3 import compose_config; "
              "cfg = compose_config(['env=cartpole', 'size=debug', 'run.steps=200']); "
              "print(p.__file__); print(cfg.env.name, cfg.run.steps, cfg.algo.name)")
    env = dict(os.environ, PYTHONPATH=str(installed))
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    where, values = done.stdout.strip().splitlines()[-2:]
    assert Path(where).is_relative_to(installed), f"imported the checkout, not the wheel: {where}"
    assert values == "cartpole 200 dreamerv3"
