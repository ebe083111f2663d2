"""A non-editable install (a built wheel in a fresh venv, no source tree) writes a model card:
the template is package data (issue 14, item 5)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = "modeling_mckd/templates/model_card.md.jinja"

WRITE_CARD = textwrap.dedent(
    """
    import json, sys
    import modeling_mckd.hub as hub
    from modeling_mckd.hub import write_model_card

    test = {"t2v_R@1": 10.0, "t2v_R@5": 30.0, "t2v_R@10": 50.0, "t2v_MdR": 9.0, "t2v_MnR": 12.5,
            "v2t_R@1": 11.0, "v2t_R@5": 31.0, "v2t_R@10": 52.0, "v2t_MdR": 8.0, "v2t_MnR": 11.0, "rsum": 184.0}
    path = write_model_card("out", role="teacher", model_name="installed-teacher", results={"test": test},
                            training_config={"dataset_name": "synthetic"})
    print(json.dumps({"hub": hub.__file__, "template": str(hub.TEMPLATE_PATH), "card": str(path.resolve())}))
    """
)


def _run(command, **kwargs):
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow  # builds a wheel and a venv (about a minute); kept in the default run
def test_wheel_install_writes_a_model_card(tmp_path):
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources, and a stale
    # build/lib in the checkout could leak removed modules into later wheels.
    source = tmp_path / "source"
    shutil.copytree(REPO_ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "build", "*.egg-info", ".venv", "__pycache__", ".pytest_cache", ".benchmarks"))
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q",
          "-w", str(wheels)], cwd=tmp_path)
    (wheel,) = wheels.glob("mckd-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert TEMPLATE in names
    assert "model_card.md" not in names and not [n for n in names if n.startswith("dataset_scripts/")]

    # A fresh venv that sees the current interpreter's site-packages (torch, transformers...) but
    # not the source tree; --no-deps so nothing is downloaded.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)])
    python = venv / "bin" / "python"
    # When the tests run in a venv, --system-site-packages reaches the base interpreter, not this
    # venv's packages: add this interpreter's site-packages as a plain path (a path line in a .pth
    # file; the .pth files inside it, such as an editable install's hook, are not processed).
    new_site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (new_site / "outer_site_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], cwd=tmp_path)

    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    (workdir / "write_card.py").write_text(WRITE_CARD)
    # The current interpreter's editable install of this checkout must not leak in: drop its
    # path hooks by running in isolated mode (-I ignores PYTHONPATH and the script's folder stays
    # on sys.path only) and check which file was imported.
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH",)}
    env["HF_HUB_OFFLINE"] = "1"
    done = _run([str(python), "-I", "write_card.py"], cwd=workdir, env=env)
    reported = json.loads(done.stdout.strip().splitlines()[-1])
    site = Path(reported["hub"]).resolve()
    assert REPO_ROOT not in site.parents and source not in site.parents, f"imported a source tree, not the wheel: {site}"
    assert venv in site.parents
    assert Path(reported["template"]).is_file() and venv in Path(reported["template"]).resolve().parents
    card = Path(reported["card"]).read_text()
    assert card.startswith("---\n") and "# installed-teacher" in card
    assert "This is the **teacher** of MCKD" in card
    assert "184.0" in card or "184" in card

    # Every console script of pyproject.toml is installed and its --help runs outside the source tree.
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"mckd-train", "mckd-distill", "mckd-search", "mckd-app", "mckd-prepare-msrvtt"} <= set(scripts)
    running = {name: subprocess.Popen([str(venv / "bin" / name), "--help"], cwd=workdir, env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for name in scripts}
    for name, process in running.items():
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, f"{name} --help: {err[-2000:]}"
        assert out.startswith("usage: "), f"{name} --help printed {out[:200]!r}"
        assert out.startswith("usage: " + name), f"{name} --help printed {out[:200]!r}"
    # the entry points come from the wheel, not from the checkout
    script_text = (venv / "bin" / "mckd-train").read_text()
    assert "from modeling_mckd.cli import train_main" in script_text


def test_source_template_is_the_one_the_package_reads():
    import modeling_mckd.hub as hub

    assert hub.TEMPLATE_PATH == REPO_ROOT / TEMPLATE
    # One template only: the top-level model_card.md points to it and is not a second copy.
    assert "{{" not in (REPO_ROOT / "model_card.md").read_text()
    assert TEMPLATE in (REPO_ROOT / "model_card.md").read_text()
