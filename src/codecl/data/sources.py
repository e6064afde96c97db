"""The files the offline miner reads: local folders, the standard library, pinned site packages, pinned npm tarballs.

Every default source is pinned, so two machines with the same pins mine the same corpus. A record's
`url` names the source and its version (`cpython:3.11.7/Lib/os.py`, `pypi:sympy@1.14.0/...`,
`npm:lodash@4.17.21/...`), never a path on this machine, so the corpus's bytes do not depend on
where Python or the virtual environment is installed.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zlib
from importlib import metadata
from pathlib import Path
from typing import Iterator, NamedTuple

from codecl.errors import UserError
from codecl.paths import cache_dir

SUFFIXES = {"python": ".py", "javascript": ".js"}
TEST_DIRS = {"test", "tests", "testing", "__tests__", "spec", "specs", "idle_test"}
# Never mined from any folder: installed third-party code and build caches.
ALWAYS_SKIPPED_DIRS = {"node_modules", "site-packages", "dist-packages", "__pycache__"}
STDLIB_SKIP_DIRS = {"test", "tests", "idle_test", "lib2to3", "ensurepip", "_bundled"}


class SourceFile(NamedTuple):
    repo: str  # "cpython-stdlib", "sympy@1.14.0", "lodash@4.17.21" or a local folder's name
    path: str  # relative to the repo, with "/" separators
    url_prefix: str  # "cpython:3.11.7/Lib/os.py", "npm:name@version/path" or "file:///abs/path"; "#L10-L20" is appended
    content: bytes


class Source(NamedTuple):
    """One source of files, with the version mined and the version pinned, for the corpus's manifest."""

    name: str
    version: str | None  # the Python version, the installed or pinned package version; None if not installed
    pinned: str | None  # the version the package list pins; None for the standard library and local folders
    files: Iterator[SourceFile]


class SitePackage(NamedTuple):
    name: str  # the distribution's name, as pip knows it
    version: str  # as constraints.txt pins it (torch: as the README installs it)
    skip: tuple[str, ...] = ()  # path prefixes under site-packages: vendored or generated code


# Documented packages of the project's own environment (`pip install -e .[dev] -c constraints.txt`,
# torch installed on its own), chosen by yield: functions kept, measured on 2026-11-28. Together with
# the standard library they give about 30,000 functions.
SITE_PACKAGES = (
    SitePackage("torch", "2.13.0", skip=("torch/_vendor/", "torch/_inductor/kernel/vendored_templates/")),  # 8,600
    SitePackage("sympy", "1.14.0"),  # 5,600
    SitePackage("scipy", "1.17.1", skip=("scipy/_lib/array_api_compat/", "scipy/_lib/array_api_extra/")),  # 2,600
    # models/ is 4,300 functions kept out of 8,000 copies: its modeling files are generated from its modular ones.
    SitePackage("transformers", "5.24.0", skip=("transformers/models/",)),  # 2,400
    SitePackage("networkx", "3.6.1"),  # 1,270
    SitePackage("numpy", "2.4.6"),  # 1,140
    SitePackage("huggingface_hub", "2.4.0"),  # 1,100
    SitePackage("peft", "0.21.2"),  # 590
    SitePackage("pydantic", "2.14.4", skip=("pydantic/v1/",)),  # 400; v1/ is the previous major version, vendored
    SitePackage("rich", "15.0.0"),  # 390
    SitePackage("accelerate", "1.15.0"),  # 370
    SitePackage("mpmath", "1.3.0"),  # 350
    SitePackage("fsspec", "2026.9.0"),  # 290
    SitePackage("jinja2", "3.1.6"),  # 230
    SitePackage("packaging", "26.4"),  # 200
    SitePackage("click", "8.5.1"),  # 180
)


class NpmPackage(NamedTuple):
    name: str
    version: str
    skip: tuple[str, ...] = ()  # path prefixes inside the package: bundles that repeat the sources


# MIT, BSD or Apache packages whose tarballs ship unbundled sources with JSDoc on most functions;
# pinned so every machine mines the same corpus. Functions kept, measured on 2026-11-28, in comments.
NPM_PACKAGES = (
    NpmPackage("lodash", "4.17.21", skip=("lodash.js", "core.js", "fp/")),  # 470; the modules repeat lodash.js
    NpmPackage("express", "4.21.2"),  # 80
    NpmPackage("mongoose", "8.9.5", skip=("dist/",)),  # 690; dist/ is the browser bundle
    NpmPackage("eslint", "8.57.1"),  # 1,740
    NpmPackage("ws", "8.18.0"),  # 100
    NpmPackage("commander", "12.1.0"),  # 125
    # build/ bundles src/; examples/ (1,300 more) holds demos and addons, left out to keep mining near 90 s.
    NpmPackage("three", "0.187.0", skip=("build/", "examples/")),  # 2,840
    NpmPackage("phaser", "4.2.1", skip=("dist/", "build/", "plugins/", "tests/")),  # 4,200 from src/
    NpmPackage("ol", "10.11.0", skip=("dist/",)),  # 1,550; BSD-2-Clause
    NpmPackage("mongodb", "7.9.0"),  # 450; Apache-2.0, lib/ is compiled from TypeScript with its JSDoc
    NpmPackage("luxon", "3.7.2", skip=("build/",)),  # 260
    NpmPackage("mocha", "12.0.3", skip=("mocha.js",)),  # 210; mocha.js is the browser bundle
    NpmPackage("socket.io", "4.8.4", skip=("client-dist/",)),  # 130
    NpmPackage("koa", "3.3.0"),  # 85
)


def folder_files(
    root: Path, language: str, repo: str | None = None, skip_dirs=frozenset(), url_base: str | None = None,
) -> Iterator[SourceFile]:
    """Every source file of `language` under `root`, in sorted order; urls under `url_base`, else file URIs."""
    if not root.is_dir():
        raise UserError(f"--{language}-dir {root} is not a folder; expected a folder of {SUFFIXES[language]} files")
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(
            name for name in subfolders
            if name not in skip_dirs and name not in ALWAYS_SKIPPED_DIRS and not name.startswith(".")
        )
        for name in sorted(files):
            if name.endswith(SUFFIXES[language]) and not name.endswith(".min.js"):
                path = Path(folder, name)
                relative = path.relative_to(root).as_posix()
                url = f"{url_base}/{relative}" if url_base else path.resolve().as_uri()
                yield SourceFile(repo or root.name, relative, url, path.read_bytes())


def stdlib_source() -> Source:
    """The running interpreter's standard library, without tests, vendored wheels or third-party packages."""
    version = sys.version.split()[0]
    files = folder_files(Path(sysconfig.get_paths()["stdlib"]), "python", "cpython-stdlib", STDLIB_SKIP_DIRS,
                         url_base=f"cpython:{version}/Lib")
    return Source("cpython-stdlib", version, None, files)


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def site_package_versions() -> dict[str, str | None]:
    """The installed version of each of `SITE_PACKAGES` (None where missing): a mined corpus is current only for these."""
    return {package.name: installed_version(package.name) for package in SITE_PACKAGES}


def pinned_sources_hash() -> str:
    """A short hash of `SITE_PACKAGES` and `NPM_PACKAGES` with their skip lists: a mined corpus is current for these."""
    return hashlib.sha256(f"{SITE_PACKAGES!r}\n{NPM_PACKAGES!r}".encode()).hexdigest()[:16]


def site_package_source(package: SitePackage) -> Source:
    """The package's installed .py files, found through its metadata; a one-line warning if it is missing or not the pin.

    A local version label (torch's `+cpu`) is not a difference: the Python sources of a build are the same.
    """
    installed = installed_version(package.name)
    if installed is None:
        print(f"warning: {package.name} is not installed, so the corpus lacks it; install the pinned version with "
              f"`pip install {package.name}=={package.version}`", file=sys.stderr)
        return Source(package.name, None, package.version, iter(()))
    version = installed.split("+")[0]
    if version != package.version:
        print(f"warning: {package.name} {installed} is installed, the miner pins {package.version}; mining "
              f"{installed}, so this corpus differs from the default one (MINED.json records it)", file=sys.stderr)
    return Source(f"{package.name}@{version}", installed, package.version, site_package_files(package, version))


def site_package_files(package: SitePackage, version: str) -> Iterator[SourceFile]:
    """The .py files the distribution's RECORD lists, in sorted order, without tests and the package's `skip`."""
    distribution = metadata.distribution(package.name)
    repo = f"{package.name}@{version}"
    # RECORD lists what pip installed; paths starting with ".." are scripts outside site-packages.
    paths = sorted(str(path) for path in distribution.files or () if path.suffix == ".py")
    for path in paths:
        folders = set(path.lower().split("/")[:-1])
        if path.startswith(("..", *package.skip)) or folders & TEST_DIRS or folders & ALWAYS_SKIPPED_DIRS:
            continue
        content = Path(distribution.locate_file(path)).read_bytes()
        yield SourceFile(repo, path, f"pypi:{repo}/{path}", content)


def npm_tarball(package: NpmPackage) -> Path:
    """The package's tarball from `npm pack`, downloaded once into the cache.

    `npm pack` writes into a fresh folder and the finished tarball is renamed into place, so an
    interrupted download never leaves a partial tarball under the final name.
    """
    folder = cache_dir() / "npm"
    tarball = folder / f"{package.name.lstrip('@').replace('/', '-')}-{package.version}.tgz"
    if tarball.exists():
        return tarball
    hint = "point the miner at local JavaScript files with --javascript-dir DIR (with --no-npm to skip npm)"
    if shutil.which("npm") is None:
        raise UserError(f"npm is not installed (needed to fetch {package.name}@{package.version}); {hint}")
    folder.mkdir(parents=True, exist_ok=True)
    packing = Path(tempfile.mkdtemp(prefix=f"{tarball.name}.", dir=folder))  # same file system: rename is atomic
    try:
        command = ["npm", "pack", f"{package.name}@{package.version}", "--pack-destination", str(packing), "--silent"]
        try:
            subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as problem:
            details = (getattr(problem, "stderr", None) or str(problem)).strip().splitlines()
            raise UserError(f"`npm pack {package.name}@{package.version}` failed, the npm registry may be unreachable "
                            f"({details[-1] if details else 'no output'}); {hint}") from None
        if not (packing / tarball.name).is_file():
            raise UserError(f"`npm pack` did not write {tarball.name}; {hint}")
        os.replace(packing / tarball.name, tarball)
    finally:
        shutil.rmtree(packing, ignore_errors=True)
    return tarball


def npm_source(package: NpmPackage) -> Source:
    return Source(f"{package.name}@{package.version}", package.version, package.version, npm_files(package))


def npm_files(package: NpmPackage) -> Iterator[SourceFile]:
    """The package's .js sources, read straight from its tarball, bundles and minified files left out."""
    repo = f"{package.name}@{package.version}"
    tarball = npm_tarball(package)
    contents = {}
    try:
        with tarfile.open(tarball, "r:gz") as archive:
            # Read in archive order, then sort: reading a gzip stream out of order decompresses it again from
            # the start for every file (three.js took 15 s instead of 0.4 s).
            for member in archive:
                path = member.name.split("/", 1)[-1]  # npm puts everything under "package/"
                if (member.isfile() and path.endswith(".js") and not path.endswith(".min.js")
                        and "node_modules/" not in path and not path.startswith(package.skip)):
                    contents[path] = archive.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as problem:
        raise UserError(f"{tarball}: damaged npm tarball of {repo} ({type(problem).__name__}: {problem}); "
                        "delete it to fetch it again") from None
    for path in sorted(contents):
        yield SourceFile(repo, path, f"npm:{repo}/{path}", contents[path])


def default_sources(language: str) -> list[Source]:
    """The default sources of one language: the standard library and `SITE_PACKAGES`, or `NPM_PACKAGES`."""
    if language == "python":
        return [stdlib_source(), *map(site_package_source, SITE_PACKAGES)]
    return list(map(npm_source, NPM_PACKAGES))
