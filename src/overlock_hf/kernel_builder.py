"""Build the fused ContMix kernel into a kernels-hub layout without nix/kernel-builder.

``overlock-hf build-kernel OUTPUT_DIR`` compiles the kernel-builder source tree (``overlock_hf/contmix_kernel``,
shipped with the package, described by its ``build.toml``) with ``torch.utils.cpp_extension`` for the installed
torch and lays it out the way ``kernels`` expects::

    OUTPUT_DIR/build/torch{MAJOR}{MINOR}-cxx11-cpu-x86_64-linux/
        __init__.py  functional.py  layers.py  _ops.py  _overlock_contmix_cpu_<uid>.abi3.so  metadata.json
    OUTPUT_DIR/build/torch{MAJOR}{MINOR}-cxx11-cu{XYZ}-x86_64-linux/      (CUDA build of torch + nvcc)

so that ``kernels.get_local_kernel(Path(OUTPUT_DIR))``, ``kernels.LocalLayerRepository(Path(OUTPUT_DIR),
layer_name="ContMix")`` and, once uploaded, ``kernels.get_kernel(repo_id, version=1)`` load it.

The ``<uid>`` is a hash of the sources, the torch version and the compiler flags; it makes the op namespace
unique per build and lets a cached ``OUTPUT_DIR`` be reused: a variant whose ``metadata.json`` already
carries the current id is not rebuilt. The CPU implementation is registered in every variant (``kernels``
picks the variant from the torch build, not from the device). Such builds suit local use and tests; builds
published on the Hub should come from kernel-builder (manylinux, provenance).

A little over 300 lines: the plan, compile and stage steps of one build and the CUDA flag logic they share.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

__all__ = ["DEFAULT_SOURCE_DIR", "KernelVariant", "available_backends", "build_kernel"]

DEFAULT_SOURCE_DIR = Path(__file__).resolve().parent / "contmix_kernel"  # package data: in wheels and checkouts
_BUILDER_REVISION = "2"  # bump when the layout or flags below change, so cached builds are redone
_CPU_CFLAGS = ["-O3", "-fopenmp", "-fno-trapping-math", "-UTORCH_API_INCLUDE_EXTENSION_H", "-DPy_LIMITED_API=0x03090000"]
_CUDA_CFLAGS = ["-O3", "-UTORCH_API_INCLUDE_EXTENSION_H", "-DCUDA_KERNEL", "--expt-relaxed-constexpr"]
_LDFLAGS = ["-fopenmp"]

_COMPILE_SCRIPT = """
import json, sys
from torch.utils.cpp_extension import load
spec = json.loads(sys.argv[1])
load(name=spec["name"], sources=spec["sources"], extra_cflags=spec["cflags"],
     extra_cuda_cflags=spec["cuda_cflags"], extra_ldflags=spec["ldflags"],
     extra_include_paths=spec["include_paths"], build_directory=spec["build_directory"],
     with_cuda=spec["with_cuda"], is_python_module=False, verbose=spec["verbose"])
"""


@dataclass(frozen=True)
class KernelVariant:
    """One built variant: its folder under ``OUTPUT_DIR/build``, op namespace id and whether it was rebuilt."""

    path: Path
    kernel_id: str
    backend: str
    rebuilt: bool


def _torch():
    import torch

    return torch


def _variant_name(backend: str) -> str:
    torch = _torch()
    major, minor = torch.__version__.split(".")[:2]
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(), platform.machine().lower())
    system = platform.system().lower()
    if backend == "cpu":
        compute = "cpu"
    else:
        cuda_major, cuda_minor = torch.version.cuda.split(".")[:2]
        compute = f"cu{cuda_major}{cuda_minor}"
    return f"torch{major}{minor}-cxx11-{compute}-{machine}-{system}"


def available_backends() -> list[str]:
    """Backends that can be built here: ``cpu`` always, ``cuda`` for a CUDA build of torch with nvcc."""
    torch = _torch()
    from torch.utils.cpp_extension import CUDA_HOME

    backends = ["cpu"]
    if torch.version.cuda is not None and CUDA_HOME is not None and (Path(CUDA_HOME) / "bin" / "nvcc").exists():
        backends.append("cuda")
    return backends


def _read_build_toml(source_dir: Path) -> dict:
    build_toml = source_dir / "build.toml"
    if not build_toml.is_file():
        raise FileNotFoundError(f"kernel source tree not found: {build_toml} is missing (use --source)")
    with build_toml.open("rb") as handle:
        return tomllib.load(handle)


def _package_dir(source_dir: Path, name: str) -> Path:
    package = source_dir / "torch-ext" / name.replace("-", "_")
    if not (package / "__init__.py").is_file():
        raise FileNotFoundError(f"kernel Python package missing: {package}/__init__.py")
    return package


def _kernel_sections(config: dict, backend: str) -> list[dict]:
    """The ``[kernel.*]`` sections compiled into a variant: the CPU ones always, plus those of ``backend``."""
    kernels = config.get("kernel", {}).values()
    return [section for section in kernels if section.get("backend") in {"cpu", backend}]


# First nvcc release that accepts each compute capability, and the last one that still does (nvcc 13 dropped
# Maxwell, Pascal and Volta). A capability outside its range is left out of the build instead of failing it.
_NVCC_FIRST = {"8.0": (11, 0), "8.6": (11, 1), "8.7": (11, 4), "8.9": (11, 8), "9.0": (11, 8), "10.0": (12, 8),
               "10.3": (12, 9), "11.0": (13, 0), "12.0": (12, 8), "12.1": (12, 9)}
_NVCC_LAST = {cap: (12, 9) for cap in ("5.0", "5.2", "5.3", "6.0", "6.1", "6.2", "7.0", "7.2")}


def nvcc_version(nvcc: str | None = None) -> tuple[int, int] | None:
    """``(major, minor)`` of the nvcc that torch's extension builder uses, or None when there is none."""
    if nvcc is None:
        from torch.utils.cpp_extension import CUDA_HOME

        nvcc = str(Path(CUDA_HOME) / "bin" / "nvcc") if CUDA_HOME else shutil.which("nvcc")
    if not nvcc or not Path(nvcc).exists():
        return None
    output = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    found = re.search(r"release (\d+)\.(\d+)", output)
    return (int(found.group(1)), int(found.group(2))) if found else None


def cuda_gencode_flags(capabilities: list[str], version: tuple[int, int] | None) -> list[str]:
    """``-gencode`` flags: SASS for every capability this nvcc ``version`` accepts, plus PTX of the newest one
    (JIT-compiled by the driver on GPUs newer than the list, instead of failing with "no kernel image")."""
    ordered = sorted(set(capabilities), key=lambda cap: tuple(int(part) for part in cap.split(".")))
    if version is not None:
        ordered = [cap for cap in ordered
                   if _NVCC_FIRST.get(cap, (0, 0)) <= version <= _NVCC_LAST.get(cap, (99, 99))]
    if not ordered:
        raise RuntimeError(f"nvcc {version} accepts none of the CUDA capabilities {capabilities} of build.toml")
    flags = [f"-gencode=arch=compute_{cap.replace('.', '')},code=sm_{cap.replace('.', '')}" for cap in ordered]
    newest = ordered[-1].replace(".", "")
    return flags + [f"-gencode=arch=compute_{newest},code=compute_{newest}"]


def _cuda_flags(sections: list[dict]) -> tuple[list[str], list[str]]:
    """nvcc ``-gencode`` flags from ``cuda-capabilities`` (filtered by the nvcc version, PTX of the newest) and
    the extra CUDA include dirs of the pip wheels."""
    capabilities = [cap for section in sections for cap in section.get("cuda-capabilities", [])]
    gencode = cuda_gencode_flags(capabilities, nvcc_version())
    includes = []
    for entry in sys.path:  # the system CUDA may lack headers (cusparse.h) that torch's headers include
        candidate = Path(entry) / "nvidia" / "cu13" / "include"
        if candidate.is_dir():
            includes.append(str(candidate))
            break
    return gencode, includes


def _source_hash(source_dir: Path, files: list[Path], package: Path, flags: list[str], backend: str) -> str:
    torch = _torch()
    digest = hashlib.sha256()
    for item in (_BUILDER_REVISION, torch.__version__, str(torch.version.cuda), backend, sys.version, *flags):
        digest.update(item.encode() + b"\0")
    for path in sorted({*files, source_dir / "build.toml", *package.glob("*.py")}):
        digest.update(str(path.relative_to(source_dir)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def _ops_module(kernel_id: str) -> str:
    return (
        f'"""Loads the compiled extension; its op namespace `{kernel_id}` is unique to this build."""\n\n'
        "import torch\n\n"
        f"from . import {kernel_id}  # noqa: F401  (importing registers the ops)\n\n"
        f"ops = torch.ops.{kernel_id}\n\n\n"
        "def add_op_namespace_prefix(op_name: str) -> str:\n"
        '    """Qualified name of an op of this build, e.g. for `torch.library.register_fake`."""\n'
        f'    return f"{kernel_id}::{{op_name}}"\n'
    )


@contextlib.contextmanager
def _locked(directory: Path):
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".build.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_current(variant_dir: Path, kernel_id: str) -> bool:
    metadata = variant_dir / "metadata.json"
    if not metadata.is_file() or not (variant_dir / f"{kernel_id}.abi3.so").is_file():
        return False
    try:
        return json.loads(metadata.read_text()).get("id") == kernel_id
    except ValueError:
        return False


@dataclass(frozen=True)
class _BuildPlan:
    """Everything one variant's build needs, decided before compiling: sources, flags, op id, target folder."""

    name: str
    version: int
    license: str
    backend: str
    kernel_id: str
    package: Path
    sources: list[str]
    include_paths: list[str]
    cflags: list[str]
    cuda_cflags: list[str]
    ldflags: list[str]
    variant_dir: Path


def _plan(source_dir: Path, config: dict, backend: str, output_dir: Path) -> _BuildPlan:
    """Read what ``build.toml`` lists for ``backend``, check the files exist, derive flags and the build id."""
    general = config["general"]
    name = general["name"]
    package = _package_dir(source_dir, name)
    sections = _kernel_sections(config, backend)
    files = [source_dir / f for f in config.get("torch", {}).get("src", [])]
    files += [source_dir / f for section in sections for f in section.get("src", [])]
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"source listed in build.toml is missing: {path}")
    include_paths = [str(source_dir / "torch-ext")]
    include_paths += [str(source_dir / inc) for section in sections for inc in section.get("include", [])]
    cuda_cflags, ldflags = [], list(_LDFLAGS)
    cflags = list(_CPU_CFLAGS)
    if backend == "cuda":
        gencode, cuda_includes = _cuda_flags(sections)
        cflags.append("-DCUDA_KERNEL")
        cuda_cflags = [*_CUDA_CFLAGS, *gencode]
        include_paths += cuda_includes
    kernel_id = "_{}_{}_{}".format(
        name.replace("-", "_"),
        backend,
        _source_hash(source_dir, files, package, [*cflags, *cuda_cflags, *ldflags], backend),
    )
    return _BuildPlan(
        name=name, version=int(general.get("version", 1)), license=general.get("license", "Apache-2.0"),
        backend=backend, kernel_id=kernel_id, package=package,
        sources=sorted(str(p) for p in files if p.suffix in {".cpp", ".cc", ".cu"}), include_paths=include_paths,
        cflags=cflags, cuda_cflags=cuda_cflags, ldflags=ldflags,
        variant_dir=output_dir / "build" / _variant_name(backend),
    )


def _compile(plan: _BuildPlan, scratch: str, verbose: bool) -> Path:
    """Compile the plan's sources in a fresh interpreter (``torch.utils.cpp_extension.load``) into ``scratch``;
    returns the shared object."""
    spec = {
        "name": plan.kernel_id, "sources": plan.sources, "cflags": plan.cflags, "cuda_cflags": plan.cuda_cflags,
        "ldflags": plan.ldflags, "include_paths": plan.include_paths, "build_directory": scratch,
        "with_cuda": plan.backend == "cuda", "verbose": verbose,
    }
    env = dict(os.environ)
    env.setdefault("MAX_JOBS", str(os.cpu_count() or 1))
    result = subprocess.run(
        [sys.executable, "-c", _COMPILE_SCRIPT, json.dumps(spec)], env=env, capture_output=not verbose, text=True,
    )
    if result.returncode != 0:
        log = "" if verbose else (result.stdout + result.stderr)[-8000:]
        raise RuntimeError(f"building the ContMix kernel ({plan.kernel_id}) failed:\n{log}")
    return Path(scratch) / f"{plan.kernel_id}.so"


def _stage(plan: _BuildPlan, shared_object: Path) -> None:
    """Lay out the variant folder (Python package, ``_ops.py``, the ``.abi3.so``, ``metadata.json``) beside the
    target and move it into place in one rename: a reader never sees a half-written variant."""
    staging = Path(tempfile.mkdtemp(prefix=f".{plan.variant_dir.name}-", dir=plan.variant_dir.parent))
    for module in plan.package.glob("*.py"):
        shutil.copy2(module, staging / module.name)
    (staging / "_ops.py").write_text(_ops_module(plan.kernel_id))
    shutil.copy2(shared_object, staging / f"{plan.kernel_id}.abi3.so")
    metadata = {
        "id": plan.kernel_id, "name": plan.name, "version": plan.version, "license": plan.license,
        "python-depends": [], "backend": {"type": plan.backend},
    }
    (staging / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    if plan.variant_dir.exists():
        shutil.rmtree(plan.variant_dir)
    staging.rename(plan.variant_dir)


def _build_variant(source_dir: Path, config: dict, backend: str, output_dir: Path, force: bool, verbose: bool):
    """Plan, then (unless an up-to-date build is there) compile and stage one variant."""
    plan = _plan(source_dir, config, backend, output_dir)
    if not force and _is_current(plan.variant_dir, plan.kernel_id):
        return KernelVariant(plan.variant_dir, plan.kernel_id, backend, rebuilt=False)
    with tempfile.TemporaryDirectory(prefix="contmix-build-") as scratch:
        _stage(plan, _compile(plan, scratch, verbose))
    return KernelVariant(plan.variant_dir, plan.kernel_id, backend, rebuilt=True)


def build_kernel(
    output_dir: str | os.PathLike,
    source_dir: str | os.PathLike | None = None,
    backends: list[str] | None = None,
    force: bool = False,
    verbose: bool = False,
) -> list[KernelVariant]:
    """Build (or reuse) the kernel variants for the installed torch under ``output_dir/build``.

    Args:
        output_dir: the kernel repository folder to fill (``kernels`` loads it with ``get_local_kernel``).
        source_dir: the kernel-builder source tree; defaults to the one shipped with the package
            (``overlock_hf/contmix_kernel``).
        backends: subset of :func:`available_backends` (default: all of them).
        force: rebuild even when a variant with the same source hash exists.
        verbose: stream the compiler output.

    Returns:
        One :class:`KernelVariant` per backend.
    """
    source_dir = Path(source_dir) if source_dir is not None else DEFAULT_SOURCE_DIR
    output_dir = Path(output_dir)
    config = _read_build_toml(source_dir)
    possible = available_backends()
    backends = list(backends) if backends else possible
    for backend in backends:
        if backend not in possible:
            raise ValueError(
                f"cannot build the {backend!r} backend here (available: {possible}); a CUDA build of torch "
                "and nvcc are needed for 'cuda'"
            )
        if backend not in config["general"].get("backends", ["cpu"]):
            raise ValueError(f"{source_dir / 'build.toml'} does not declare the {backend!r} backend")
    (output_dir / "build").mkdir(parents=True, exist_ok=True)
    with _locked(output_dir):
        return [_build_variant(source_dir, config, b, output_dir, force, verbose) for b in backends]
