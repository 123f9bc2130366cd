"""Install detectron2 v0.6 into this virtual environment without compiling anything.

Run it with the environment's interpreter (the Makefile does)::

    .venv/bin/python tools/install_detectron2.py            # from PyPI's pb1-detectron2 sdist
    .venv/bin/python tools/install_detectron2.py --source ~/src/detectron2   # from a checkout
    .venv/bin/python tools/install_detectron2.py --force    # reinstall

detectron2 is not published on PyPI. The sdist ``pb1-detectron2==0.6`` is a pure-Python copy of
upstream v0.6 without the C++ sources; its own ``setup.py`` would still try to build
``detectron2._C`` and would pull ``black==21.4b2`` and tensorboard. So this script only takes the
source tree from it and installs that tree itself:

1. **Download** with ``pip download`` run by *this* interpreter, with ``--no-build-isolation``
   (pip prepares the sdist's metadata by running its ``setup.py``, which imports torch; in an
   isolated build environment pip would try to resolve a second torch), ``--no-deps`` and a
   requirements file pinning the sha256 (pip's hash-checking mode verifies the archive *before*
   it runs any code from it). The archive is cached under ``.cache/detectron2/`` next to the
   repository and its sha256 is checked again here, so a corrupted cache is refused too.
   pip, rather than reading the PEP 503 index by hand, keeps the user's pip configuration
   (index mirrors, proxies, certificates, ``find-links``) working unchanged.
2. **Stage** a tiny setuptools project in a temporary directory: the ``detectron2`` package,
   ``detectron2.projects.{deeplab,point_rend,panoptic_deeplab}`` copied from ``projects/*/``
   (upstream's ``setup.py`` maps them the same way with ``package_dir``) and the model-zoo configs
   (upstream ``configs/`` → ``detectron2/model_zoo/configs``). No extension modules, no
   dependencies: the run-time dependencies come from radseg's ``models`` extra.
3. **Install** it with ``pip install --no-deps --no-build-isolation --no-index`` so pip records a
   normal ``detectron2`` distribution (``pip show detectron2``, ``pip uninstall detectron2``).

The compiled ops that are missing (rotated boxes, deformable convolution) are stood in for by
``radseg_plugins.models.detectron2.compat``, which also adapts v0.6 to current torch, numpy,
Pillow and setuptools.

Only the standard library is used. Exit status 0 when detectron2 0.6 is installed (or already
was), 1 with a one-line reason otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SDIST_NAME = "pb1-detectron2"
SDIST_VERSION = "0.6"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
DIST_NAME = "detectron2"
WANTED_VERSION = "0.6"
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = REPO_ROOT / ".cache" / "detectron2"

#: import name under ``detectron2.projects`` → directory in the source tree (upstream setup.py)
PROJECTS = {
    "deeplab": "projects/DeepLab/deeplab",
    "point_rend": "projects/PointRend/point_rend",
    "panoptic_deeplab": "projects/Panoptic-DeepLab/panoptic_deeplab",
}
REQUIRED_PROJECTS = ("deeplab",)

#: never copied into the installed tree: build leftovers and the C++/CUDA sources
IGNORED = shutil.ignore_patterns(
    "__pycache__", "*.pyc", "*.so", "*.pyd", "*.dylib", "csrc", "*.egg-info"
)

PYPROJECT = """\
[build-system]
requires = ["setuptools>=62.3"]
build-backend = "setuptools.build_meta"

[project]
name = "{name}"
version = "{version}"
description = "detectron2 {version}, pure Python (radseg tools/install_detectron2.py)"
requires-python = ">=3.8"
dependencies = []

[project.urls]
Homepage = "https://github.com/facebookresearch/detectron2"

[tool.setuptools.packages.find]
include = ["detectron2*"]
namespaces = false

[tool.setuptools.package-data]
"detectron2.model_zoo" = ["configs/**/*.yaml", "configs/**/*.py"]
"""


class InstallError(Exception):
    """A reason to stop, printed as one line."""


def say(message: str) -> None:
    print(f"install_detectron2: {message}", flush=True)


def installed_version() -> tuple[str, str] | None:
    """Return ``(distribution, version)`` of an installed detectron2, or ``None``.

    A detectron2 that is importable without being a distribution (a checkout on
    ``PYTHONPATH``) is reported as ``("<path>", version)``; its ``__init__.py`` is read, not
    imported (importing it would import torch).
    """
    for dist in (DIST_NAME, SDIST_NAME):
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    spec = importlib.util.find_spec("detectron2")
    if spec is not None and spec.origin:
        tree = Path(spec.origin).parent.parent
        try:
            return str(tree / "detectron2"), source_version(tree)
        except (OSError, InstallError):
            return None
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run(cmd: list[str], what: str) -> None:
    say(f"running: {' '.join(cmd)}")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-15:])
        print(tail, file=sys.stderr)
        raise InstallError(f"{what} failed (exit {proc.returncode}); see the pip output above")


def download_sdist(cache_dir: Path) -> Path:
    """Return the verified sdist in ``cache_dir``, downloading it with pip if needed."""
    tarball = cache_dir / f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz"
    if tarball.is_file():
        if sha256_of(tarball) == SDIST_SHA256:
            say(f"using cached {tarball}")
            return tarball
        say(f"cached {tarball} has the wrong sha256; downloading it again")
        tarball.unlink()
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="d2-download-") as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(
            f"{SDIST_NAME}=={SDIST_VERSION} --hash=sha256:{SDIST_SHA256}\n", encoding="utf-8"
        )
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--no-build-isolation",
                "--require-hashes",
                "--dest",
                tmp,
                "-r",
                str(requirements),
            ],
            f"downloading {SDIST_NAME}=={SDIST_VERSION}",
        )
        found = sorted(Path(tmp).glob(f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz")) + sorted(
            Path(tmp).glob(f"{SDIST_NAME.replace('-', '_')}-{SDIST_VERSION}.tar.gz")
        )
        if not found:
            raise InstallError(f"pip reported success but left no {SDIST_NAME} sdist in {tmp}")
        digest = sha256_of(found[0])
        if digest != SDIST_SHA256:
            raise InstallError(
                f"{found[0].name} has sha256 {digest}, expected {SDIST_SHA256}; "
                "refusing to install it (check your package index or mirror)"
            )
        shutil.move(str(found[0]), tarball)
    say(f"downloaded {tarball} (sha256 verified)")
    return tarball


def extract(tarball: Path, into: Path) -> Path:
    """Extract ``tarball`` into ``into`` and return the source tree's root."""
    if sha256_of(tarball) != SDIST_SHA256:
        raise InstallError(f"{tarball} does not have sha256 {SDIST_SHA256}; refusing to use it")
    with tarfile.open(tarball, "r:gz") as archive:
        if hasattr(tarfile, "data_filter"):
            archive.extractall(into, filter="data")
        else:  # Python < 3.11.4: refuse members that would land outside ``into``
            root = into.resolve()
            for member in archive.getmembers():
                target = (into / member.name).resolve()
                if root not in target.parents and target != root:
                    raise InstallError(f"{tarball.name} has an unsafe member {member.name!r}")
            archive.extractall(into)  # members checked above
    roots = [p for p in into.iterdir() if p.is_dir()]
    if len(roots) != 1:
        raise InstallError(f"{tarball.name} does not have one top-level directory")
    return roots[0]


def source_version(tree: Path) -> str:
    init = tree / "detectron2" / "__init__.py"
    match = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", init.read_text("utf-8"), re.M)
    if not match:
        raise InstallError(f"{init} has no __version__ line")
    return match.group(1)


def stage_project(tree: Path, stage: Path) -> str:
    """Lay out an installable project for the detectron2 tree at ``tree``; return its version."""
    package = tree / "detectron2"
    if not (package / "__init__.py").is_file():
        raise InstallError(
            f"{tree} is not a detectron2 source tree (no detectron2/__init__.py); "
            "pass the root of an upstream checkout to --source"
        )
    version = source_version(tree)
    say(f"staging detectron2 {version} from {tree}")
    shutil.copytree(package, stage / "detectron2", ignore=IGNORED, symlinks=False)

    projects = stage / "detectron2" / "projects"
    for name, rel in PROJECTS.items():
        src = tree / rel
        if (src / "__init__.py").is_file():
            shutil.copytree(src, projects / name, ignore=IGNORED)
            say(f"  + detectron2.projects.{name} from {rel}")
        elif name in REQUIRED_PROJECTS:
            raise InstallError(f"{tree} has no {rel}/__init__.py (needed for DeepLabV3+)")

    # An upstream checkout keeps the configs at the top; the sdist already has them in place
    # (setup.py symlinks or copies them there while building).
    configs = stage / "detectron2" / "model_zoo" / "configs"
    if (tree / "configs").is_dir():
        shutil.rmtree(configs, ignore_errors=True)
        if configs.is_symlink():
            configs.unlink()
        shutil.copytree(tree / "configs", configs, ignore=IGNORED)
    if not any(configs.glob("**/*.yaml")):
        raise InstallError(f"{tree} has no model-zoo configs (configs/ or model_zoo/configs/)")
    say(f"  + {sum(1 for _ in configs.glob('**/*.yaml'))} model-zoo configs")

    for license_file in ("LICENSE",):
        if (tree / license_file).is_file():
            shutil.copy2(tree / license_file, stage / license_file)
    (stage / "pyproject.toml").write_text(
        PYPROJECT.format(name=DIST_NAME, version=version), encoding="utf-8"
    )
    return version


def pip_install(stage: Path, *, force: bool) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--no-cache-dir",
    ]
    if force:
        cmd.append("--force-reinstall")
    run([*cmd, str(stage)], "installing the staged detectron2 project")


def uninstall(dist: str) -> None:
    run([sys.executable, "-m", "pip", "uninstall", "--yes", dist], f"uninstalling {dist}")


def verify() -> None:
    """Check in a fresh interpreter that the installed tree is complete (no import of torch)."""
    probe = (
        "import importlib.metadata, importlib.util, pathlib, sys\n"
        "spec = importlib.util.find_spec('detectron2')\n"
        "assert spec and spec.origin, 'detectron2 is not importable'\n"
        "root = pathlib.Path(spec.origin).parent\n"
        "for rel in ('projects/deeplab/__init__.py', 'model_zoo/configs/Base-RCNN-FPN.yaml',\n"
        "            'layers/__init__.py', 'engine/defaults.py'):\n"
        "    assert (root / rel).is_file(), f'{root / rel} is missing'\n"
        "print(importlib.metadata.version('detectron2'), root)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if proc.returncode != 0:
        last = (proc.stdout.strip().splitlines() or ["no output"])[-1]
        raise InstallError(f"installed detectron2 does not look complete: {last}")
    version, root = proc.stdout.strip().splitlines()[-1].split(" ", 1)
    say(f"detectron2 {version} installed at {root}")


def install(source: Path | None, cache_dir: Path, *, force: bool) -> None:
    found = installed_version()
    if found and not force:
        dist, version = found
        if version == WANTED_VERSION or version.startswith(WANTED_VERSION + "+"):
            say(f"{dist} {version} is already installed; nothing to do (--force reinstalls)")
            return
        raise InstallError(
            f"{dist} {version} is installed, not {WANTED_VERSION}; pass --force to replace it"
        )
    if found and found[0] == SDIST_NAME:
        uninstall(found[0])  # another distribution owns the same files; pip would not replace it

    with tempfile.TemporaryDirectory(prefix="d2-install-") as tmp:
        if source is None:
            tarball = download_sdist(cache_dir)
            tree = extract(tarball, Path(tmp) / "src")
        else:
            tree = source.expanduser().resolve()
            if not tree.is_dir():
                raise InstallError(f"--source {source} is not a directory")
        stage = Path(tmp) / "project"
        stage.mkdir()
        version = stage_project(tree, stage)
        if version != WANTED_VERSION:
            say(f"warning: the source tree is detectron2 {version}, radseg is tested with 0.6")
        pip_install(stage, force=force)
    verify()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Install detectron2 v0.6 (pure Python, nothing compiled) into this "
        "interpreter's environment.",
    )
    parser.add_argument(
        "--source",
        type=Path,
        help="an upstream detectron2 checkout to install instead of the PyPI sdist",
    )
    parser.add_argument("--force", action="store_true", help="reinstall even if installed")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"where the downloaded sdist is kept (default: {DEFAULT_CACHE})",
    )
    args = parser.parse_args(argv)
    try:
        install(args.source, args.cache_dir, force=args.force)
    except InstallError as exc:
        print(f"install_detectron2: error: {exc}", file=sys.stderr)
        return 1
    except (OSError, tarfile.TarError) as exc:
        print(f"install_detectron2: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
