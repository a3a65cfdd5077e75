"""The GPU stack's versions are chosen once, in containers/versions.env, and every file that
repeats them (Dockerfile, build.sh, pyproject extras, gpu_wheels.sh, docs) agrees with it."""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.requirements import Requirement

from tests.helpers import REPO


def _matrix() -> dict[str, str]:
    out = {}
    for line in (REPO / "containers" / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, value = line.split("=", 1)
            assert key.isupper() and " " not in value, line
            out[key] = value
    return out


def _extras() -> dict[str, dict[str, Requirement]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    groups = {"dependencies": project["dependencies"], **project["optional-dependencies"]}
    return {g: {Requirement(r).name: Requirement(r) for r in reqs} for g, reqs in groups.items()}


MATRIX_KEYS = {
    "NGC_PYTORCH_IMAGE",
    "TRTLLM_VERSION",
    "RAY_VERSION",
    "TRANSFORMER_ENGINE",
    "MEGATRON_CORE_VERSION",
    "TRANSFORMERS_VERSION",
    "VLLM_MIN_VERSION",
}


def test_the_matrix_names_every_component():
    assert set(_matrix()) == MATRIX_KEYS
    assert _matrix()["TRANSFORMER_ENGINE"] == "from-base-image"


def test_dockerfile_defaults_and_build_script_use_the_matrix():
    m = _matrix()
    dockerfile = (REPO / "containers" / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile, flags=re.M))
    assert args["BASE_IMAGE"] == m["NGC_PYTORCH_IMAGE"]
    for key in ("TRTLLM_VERSION", "RAY_VERSION", "MEGATRON_CORE_VERSION", "TRANSFORMERS_VERSION"):
        assert args[key] == m[key], key
    build = (REPO / "containers" / "build.sh").read_text()
    assert "source containers/versions.env" in build
    assert '--build-arg "BASE_IMAGE=$NGC_PYTORCH_IMAGE"' in build
    for key in ("TRTLLM_VERSION", "RAY_VERSION", "MEGATRON_CORE_VERSION", "TRANSFORMERS_VERSION"):
        assert f'--build-arg "{key}=${key}"' in build, key


def test_pyproject_extras_pin_the_matrix_and_the_core_ranges_admit_it():
    m, extras = _matrix(), _extras()
    gpu, core = extras["gpu"], extras["dependencies"]
    assert str(gpu["tensorrt-llm"].specifier) == f"=={m['TRTLLM_VERSION']}"
    assert str(gpu["ray"].specifier) == f"=={m['RAY_VERSION']}"
    assert str(gpu["transformers"].specifier) == f"=={m['TRANSFORMERS_VERSION']}"
    assert str(extras["vllm"]["vllm"].specifier) == f">={m['VLLM_MIN_VERSION']}"
    # the core ranges admit the pinned releases, and the bare GPU machine's torch 2.11
    assert core["transformers"].specifier.contains(m["TRANSFORMERS_VERSION"])
    assert core["megatron-core"].specifier.contains(m["MEGATRON_CORE_VERSION"])
    assert core["torch"].specifier.contains("2.11.0")


def test_gpu_wheels_download_the_matrix_megatron_core():
    script = (REPO / "scripts" / "gpu_wheels.sh").read_text()
    assert f"megatron-core=={_matrix()['MEGATRON_CORE_VERSION']}" in script
    assert "--only-binary=:all:" in script and "--python-version 3.12" in script


@pytest.mark.parametrize(
    "key",
    [
        "NGC_PYTORCH_IMAGE",
        "TRTLLM_VERSION",
        "RAY_VERSION",
        "MEGATRON_CORE_VERSION",
        "TRANSFORMERS_VERSION",
        "VLLM_MIN_VERSION",
    ],
)
def test_docs_show_the_matrix(key):
    table = (REPO / "docs" / "cluster.md").read_text()
    assert f"`{_matrix()[key]}`" in table or f"`>= {_matrix()[key]}`" in table, key
