"""Fetch the offline photographs of the birds benchmark into a cache folder, without root.

Sources (see ``shared/DATA.md``):

- Debian ``tuxpaint-stamps-default``: real bird photographs cut out with an alpha channel
  (``usr/share/tuxpaint/stamps/animals/birds/*.png``; the ``cartoon/`` folder is skipped).
- Debian ``mate-backgrounds``: nature photographs (``usr/share/backgrounds/mate/nature/*.jpg``;
  the ``abstract/`` and ``desktop/`` artwork is skipped).
- The sample photographs shipped inside the scikit-image and scikit-learn wheels.

``.deb`` files are obtained with ``apt-get download`` (works as a normal user), or taken from
a folder the user gives (``debs_dir``), or skipped entirely when the user gives a folder
where the packages are already extracted (``extracted_dir``, e.g. ``/`` if installed).
Every step writes into a temporary folder that is renamed into place when complete, so an
interrupted fetch is never mistaken for a finished one and is simply redone.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

logger = logging.getLogger(__name__)

BIRDS_PACKAGE = "tuxpaint-stamps-default"
BACKGROUNDS_PACKAGE = "mate-backgrounds"
BIRDS_SUBDIR = "usr/share/tuxpaint/stamps/animals/birds"
BACKGROUNDS_SUBDIR = "usr/share/backgrounds/mate/nature"
# What to extract from each package (tar wildcards on the data archive's member names).
_PACKAGE_MEMBERS = {
    BIRDS_PACKAGE: (f"./{BIRDS_SUBDIR}/*.png",),
    BACKGROUNDS_PACKAGE: (f"./{BACKGROUNDS_SUBDIR}/*.jpg",),
}
_PACKAGE_SUBDIR = {BIRDS_PACKAGE: BIRDS_SUBDIR, BACKGROUNDS_PACKAGE: BACKGROUNDS_SUBDIR}

# Cut-outs that are not usable bird photographs (each image was looked at).
EXCLUDED_BIRDS: dict[str, str] = {
    "tux.png": "cartoon drawing (cartoon/ folder), not a photograph",
    "pengwin.png": "cartoon drawing (cartoon/ folder), not a photograph",
    "penguin_with_spider.png": "cartoon drawing of a penguin and a spider (cartoon/ folder)",
    "albino_peahen.png": "the cut-out includes the grass nest the bird sits in, so the alpha is not a "
    "bird-only mask (boxes and true masks would include grass)",
}
# Background photographs that must not be used (a bird in them would be an unlabelled positive).
# The 12 MATE nature photos were all looked at: none shows a bird ("LadyBird" is an insect,
# "TwoWings" dandelion seeds), so nothing is excluded there.
EXCLUDED_BACKGROUNDS: dict[str, str] = {}
# Sample photos of the wheels that are deliberately not used.
EXCLUDED_EXTRA_PHOTOS: dict[str, str] = {
    "skimage_astronaut.png": "a person's portrait, not a neutral background",
    "skimage_chelsea.png": "a cat: an animal close to the target class",
}
# Sample photos inside the scikit-image / scikit-learn wheels (module-relative file names).
SKIMAGE_PHOTOS = ("coffee.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png",
                  "brick.png", "grass.png", "gravel.png", "hubble_deep_field.jpg")
SKLEARN_PHOTOS = ("china.jpg", "flower.jpg")
# Near-duplicate photos: same group -> same pool (real scenes vs synthesis), no leakage.
BACKGROUND_GROUPS: dict[str, str] = {
    "skimage_motorcycle_left.png": "skimage_motorcycle",
    "skimage_motorcycle_right.png": "skimage_motorcycle",
}

_MARKER = ".complete"


class FetchError(RuntimeError):
    """Fetching or extracting the source photographs failed; the message says what to do."""


@dataclass
class BirdsSources:
    """The photographs the benchmark is built from.

    ``birds``: RGBA cut-out photos, one per identity (file stem = identity name).
    ``backgrounds``: photos without birds. ``excluded``: file name -> reason it was skipped.
    ``background_groups``: file name -> group; photos of one group always land in the same pool.
    ``origin``: file name -> where it came from (package or wheel).
    """

    birds: list[Path]
    backgrounds: list[Path]
    excluded: dict[str, str] = field(default_factory=dict)
    background_groups: dict[str, str] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)


def fetch_sources(
    cache_dir: str | os.PathLike,
    debs_dir: str | os.PathLike | None = None,
    extracted_dir: str | os.PathLike | None = None,
    extras: bool = True,
) -> BirdsSources:
    """Fetch (if needed) and list the bird cut-outs and background photos.

    ``cache_dir`` receives ``<package>/`` (extracted files) and ``extra-photos/``.
    ``debs_dir``: a folder holding ``tuxpaint-stamps-default_*.deb`` and ``mate-backgrounds_*.deb``
    (used instead of ``apt-get download``). ``extracted_dir``: a root under which
    ``usr/share/tuxpaint/...`` and ``usr/share/backgrounds/mate/...`` already exist (nothing is
    downloaded). ``extras``: also use the scikit-image / scikit-learn sample photos.
    Raises :class:`FetchError` with a clear message when a package cannot be obtained.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    roots: dict[str, Path] = {}
    for pkg in (BIRDS_PACKAGE, BACKGROUNDS_PACKAGE):
        if extracted_dir is not None:
            root = Path(extracted_dir)
            if not (root / _PACKAGE_SUBDIR[pkg]).is_dir():
                raise FetchError(f"{root}: no {_PACKAGE_SUBDIR[pkg]}/ folder (expected the extracted "
                                 f"contents of the Debian package {pkg})")
            roots[pkg] = root
        else:
            roots[pkg] = _ensure_extracted(pkg, cache, Path(debs_dir) if debs_dir else None)

    excluded: dict[str, str] = {}
    origin: dict[str, str] = {}
    birds = []
    bird_dir = roots[BIRDS_PACKAGE] / BIRDS_SUBDIR
    for p in sorted(bird_dir.rglob("*.png")):
        rel = p.relative_to(bird_dir)
        if "cartoon" in rel.parts[:-1]:
            excluded[p.name] = EXCLUDED_BIRDS.get(p.name, "cartoon/ folder: drawings, not photographs")
            continue
        if p.name in EXCLUDED_BIRDS:
            excluded[p.name] = EXCLUDED_BIRDS[p.name]
            continue
        birds.append(p)
        origin[p.name] = BIRDS_PACKAGE
    for p in sorted(bird_dir.rglob("*.svg")):
        excluded[p.name] = "vector drawing (.svg), not a photograph"
    if not birds:
        raise FetchError(f"{bird_dir}: no bird photographs found")

    backgrounds = []
    bg_dir = roots[BACKGROUNDS_PACKAGE] / BACKGROUNDS_SUBDIR
    for p in sorted(bg_dir.glob("*.jpg")):
        if p.name in EXCLUDED_BACKGROUNDS:
            excluded[p.name] = EXCLUDED_BACKGROUNDS[p.name]
            continue
        backgrounds.append(p)
        origin[p.name] = BACKGROUNDS_PACKAGE
    if extras:
        for p, where in _ensure_extra_photos(cache):
            backgrounds.append(p)
            origin[p.name] = where
        excluded.update(EXCLUDED_EXTRA_PHOTOS)
    if not backgrounds:
        raise FetchError(f"{bg_dir}: no background photographs found")
    groups = {p.name: BACKGROUND_GROUPS.get(p.name, p.name) for p in backgrounds}
    logger.info("birds sources: %d bird cut-outs, %d background photos, %d files excluded",
                len(birds), len(backgrounds), len(excluded))
    return BirdsSources(birds=birds, backgrounds=backgrounds, excluded=excluded,
                        background_groups=groups, origin=origin)


# --------------------------------------------------------------------------- packages

def _ensure_extracted(pkg: str, cache: Path, debs_dir: Path | None) -> Path:
    """Return ``cache/pkg`` holding the package's needed files, extracting them if needed."""
    dest = cache / pkg
    if (dest / _MARKER).is_file():
        return dest
    if dest.exists():
        if not dest.is_dir() or {p.name for p in dest.iterdir()} - {"usr"}:
            raise FetchError(f"{dest}: exists but is not an extraction of {pkg} (no {_MARKER} marker); "
                             f"move it away or choose another --cache folder")
        logger.warning("%s: incomplete extraction found, redoing it", dest)
        shutil.rmtree(dest)
    for stale in cache.glob(f".{pkg}.tmp-*"):  # left by an interrupted extraction
        shutil.rmtree(stale, ignore_errors=True)
    deb, downloaded = _find_or_download_deb(pkg, cache, debs_dir)
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{pkg}.tmp-"))
    try:
        _extract_deb(deb, tmp, _PACKAGE_MEMBERS[pkg])
        if not (tmp / _PACKAGE_SUBDIR[pkg]).is_dir():
            raise FetchError(f"{deb}: no {_PACKAGE_SUBDIR[pkg]}/ inside (is this the right package?)")
        (tmp / _MARKER).write_text(f"{deb.name}\n")
        os.replace(tmp, dest)
    except BaseException:
        if downloaded:  # a broken download must not be reused by the retry
            deb.unlink(missing_ok=True)
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if downloaded:
        deb.unlink(missing_ok=True)  # the extracted files are all we need; saves ~160 MB
    logger.info("extracted %s into %s", deb.name, dest)
    return dest


def _find_or_download_deb(pkg: str, cache: Path, debs_dir: Path | None) -> tuple[Path, bool]:
    """``(path to pkg_*.deb, whether we downloaded it)``."""
    if debs_dir is not None:
        found = sorted(Path(debs_dir).glob(f"{pkg}_*.deb"))
        if not found:
            raise FetchError(f"{debs_dir}: no {pkg}_*.deb file (download it with "
                             f"'apt-get download {pkg}' on a Debian/Ubuntu machine)")
        return found[-1], False
    previous = sorted((cache / "debs").glob(f"{pkg}_*.deb"))  # downloaded before an interruption
    if previous:
        return previous[-1], True
    return _apt_download(pkg, cache / "debs"), True


def _apt_download(pkg: str, out_dir: Path) -> Path:
    """``apt-get download pkg`` into ``out_dir`` (no root needed); ``apt-get update`` once if root."""
    if shutil.which("apt-get") is None:
        raise FetchError(
            f"apt-get not found, so the Debian package {pkg} cannot be downloaded here. On another "
            f"system, get {pkg}_*.deb (and the other package's .deb) and pass --debs DIR, or pass "
            f"--sources DIR with their extracted contents")
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".download-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for attempt in range(2):
        tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=".download-"))
        try:
            cmd = ["apt-get", "download", pkg]
            res = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
            if res.returncode == 0:
                debs = sorted(tmp.glob(f"{pkg}_*.deb"))
                if not debs:
                    raise FetchError(f"'{' '.join(cmd)}' succeeded but wrote no {pkg}_*.deb in {tmp}")
                final = out_dir / debs[-1].name
                os.replace(debs[-1], final)
                return final
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        err = (res.stderr or res.stdout or "").strip()
        not_found = "unable to locate package" in err.lower() or "can't select" in err.lower() \
            or "has no installation candidate" in err.lower()
        if not_found and attempt == 0 and _is_root():
            logger.info("apt-get cannot locate %s: running 'apt-get update' once", pkg)
            upd = subprocess.run(["apt-get", "update"], capture_output=True, text=True)
            if upd.returncode != 0:
                raise FetchError(f"'apt-get update' failed (exit {upd.returncode}): "
                                 f"{_tail(upd.stderr or upd.stdout)}")
            continue
        if not_found:
            raise FetchError(
                f"'apt-get download {pkg}' cannot locate the package: the package lists are missing or "
                f"stale. Run 'sudo apt-get update' once, or pass --debs DIR with the .deb files of "
                f"{BIRDS_PACKAGE} and {BACKGROUNDS_PACKAGE}. apt said: {_tail(err)}")
        raise FetchError(f"'apt-get download {pkg}' failed (exit {res.returncode}); no network? "
                         f"You can pass --debs DIR with the .deb files instead. apt said: {_tail(err)}")
    raise FetchError(f"'apt-get download {pkg}' still cannot locate the package after 'apt-get update'")


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _tail(text: str, n: int = 400) -> str:
    text = (text or "").strip()
    return text if len(text) <= n else "..." + text[-n:]


def _extract_deb(deb: Path, dest: Path, members: Sequence[str]) -> None:
    """Extract the ``members`` wildcards of ``deb``'s data archive into ``dest``.

    Uses ``dpkg-deb --fsys-tarfile | tar -x``; without ``dpkg-deb`` (non-Debian systems) the
    ``ar`` archive is read in Python (``data.tar.{xz,gz,bz2}``).
    """
    if shutil.which("dpkg-deb") and shutil.which("tar"):
        dpkg_cmd = ["dpkg-deb", "--fsys-tarfile", str(deb)]
        tar_cmd = ["tar", "-x", "-C", str(dest), "--no-same-owner", "--wildcards", *members]
        dpkg = subprocess.Popen(dpkg_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        tar = subprocess.run(tar_cmd, stdin=dpkg.stdout, capture_output=True, text=True)
        dpkg.stdout.close()  # type: ignore[union-attr]
        dpkg_err = dpkg.stderr.read().decode(errors="replace") if dpkg.stderr else ""
        dpkg_rc = dpkg.wait()
        if dpkg_rc != 0:
            raise FetchError(f"'{' '.join(dpkg_cmd)}' failed (exit {dpkg_rc}): {_tail(dpkg_err)}")
        if tar.returncode != 0:
            raise FetchError(f"'{' '.join(tar_cmd)}' failed (exit {tar.returncode}): {_tail(tar.stderr)}")
        _check_links(deb, dest)
        return
    _extract_deb_python(deb, dest, members)


def _extract_deb_python(deb: Path, dest: Path, members: Sequence[str]) -> None:
    import fnmatch

    data = _read_ar_member(deb, "data.tar")
    name, payload = data
    mode = {"xz": "r:xz", "gz": "r:gz", "bz2": "r:bz2", "tar": "r:"}.get(name.rsplit(".", 1)[-1])
    if mode is None:
        raise FetchError(f"{deb}: {name} is compressed in a way Python cannot read; install dpkg-deb "
                         f"or pass --sources DIR with the extracted package")
    n = 0
    with tarfile.open(fileobj=io.BytesIO(payload), mode=mode) as tf:
        for m in tf.getmembers():
            if not any(fnmatch.fnmatch(m.name, pat) for pat in members):
                continue
            target = _member_target(deb, dest, m)
            if not m.isfile():
                continue  # links inside the folder and folders are not needed
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(m)
            assert src is not None
            target.write_bytes(src.read())
            n += 1
    if n == 0:
        raise FetchError(f"{deb}: none of {list(members)} found in {name}")


def _member_target(deb: Path, dest: Path, m: tarfile.TarInfo) -> Path:
    """Where archive member ``m`` goes under ``dest``; refuses absolute names, ``..`` and links
    that point outside ``dest`` (a crafted package must not write or read elsewhere)."""
    parts = Path(m.name).parts
    if Path(m.name).is_absolute() or ".." in parts:
        raise FetchError(f"{deb}: refusing archive member {m.name!r} (absolute path or '..')")
    target = dest.joinpath(*[p for p in parts if p != "."])
    if m.issym() or m.islnk():
        link = Path(m.linkname)
        base = target.parent if m.issym() else dest
        if link.is_absolute() or not _inside(base / link, dest):
            raise FetchError(f"{deb}: refusing archive member {m.name!r}: link to {m.linkname!r} leaves the folder")
    return target


def _inside(path: Path, folder: Path) -> bool:
    return os.path.normpath(path).startswith(os.path.normpath(folder) + os.sep)


def _check_links(deb: Path, dest: Path) -> None:
    """Refuse an extraction (by ``tar``) holding a link that leaves ``dest``."""
    for root, dirs, files in os.walk(dest):
        for name in dirs + files:
            p = Path(root) / name
            if p.is_symlink() and not _inside(Path(os.path.realpath(p)), Path(os.path.realpath(dest))):
                raise FetchError(f"{deb}: refusing archive member {str(p.relative_to(dest))!r}: link to "
                                 f"{os.readlink(p)!r} leaves the folder")


def _read_ar_member(path: Path, prefix: str) -> tuple[str, bytes]:
    """The first member of ``ar`` archive ``path`` whose name starts with ``prefix``."""
    with open(path, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise FetchError(f"{path}: not a .deb (ar) archive")
        while True:
            header = f.read(60)
            if len(header) < 60:
                break
            name = header[:16].decode().strip().rstrip("/")
            size = int(header[48:58].decode().strip())
            payload = f.read(size)
            if size % 2:
                f.read(1)
            if name.startswith(prefix):
                return name, payload
    raise FetchError(f"{path}: no {prefix}* member (not a Debian package?)")


# --------------------------------------------------------------------------- wheel photos

def _ensure_extra_photos(cache: Path) -> list[tuple[Path, str]]:
    """Copy the scikit-image / scikit-learn sample photos into ``cache/extra-photos``."""
    dest = cache / "extra-photos"
    wanted: list[tuple[Path, str, str]] = []  # (source, target name, origin)
    try:
        import skimage.data

        sk_dir = Path(skimage.data.__file__).parent
        wanted += [(sk_dir / n, f"skimage_{n}", "scikit-image") for n in SKIMAGE_PHOTOS]
    except ImportError:
        logger.warning("scikit-image not installed: its sample photos are not used as backgrounds")
    try:
        import sklearn.datasets

        sl_dir = Path(sklearn.datasets.__file__).parent / "images"
        wanted += [(sl_dir / n, f"sklearn_{n}", "scikit-learn") for n in SKLEARN_PHOTOS]
    except ImportError:
        logger.warning("scikit-learn not installed: its sample photos are not used as backgrounds")
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for src, name, where in wanted:
        target = dest / name
        if not target.is_file():
            if not src.is_file():
                logger.warning("%s: sample photo missing from the installed %s, skipped", src, where)
                continue
            tmp = dest / f".{name}.tmp"
            shutil.copyfile(src, tmp)
            os.replace(tmp, target)
        out.append((target, where))
    return out
