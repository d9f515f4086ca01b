"""Read a dataset's source archive in one streamed pass: .zip, .tar, .tar.gz/.bz2/.xz.

The archives are large (DomainNet 20 GB, TerraIncognita 6.5 GB), so members are yielded in
archive order and copied while the iteration stands on them, never extracted whole; a
truncated or damaged archive (also one cut short at the end, which tarfile would take for its
end) ends as one `DataError` that says to fetch it again. Apart from `prepare.py` because it
knows nothing of any one dataset.
"""
import bz2
import gzip
import lzma
import os
import tarfile
import zipfile
import zlib
from typing import Iterator, Sequence

from domainbed_align.datasets.download import CHUNK, progress_bar
from domainbed_align.lib.errors import DataError

_COMPRESSIONS = ((b"\x1f\x8b", lambda f: gzip.GzipFile(fileobj=f, mode="rb")),
                 (b"BZh", lambda f: bz2.BZ2File(f, "rb")),
                 (b"\xfd7zXZ\x00", lambda f: lzma.LZMAFile(f, "rb")))
_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, zlib.error, zipfile.BadZipFile, lzma.LZMAError,
                   OSError)


def _unreadable(path: str, e: BaseException) -> DataError:
    return DataError(f"archive {path} is corrupt, truncated or not a .tar/.tar.gz/.zip "
                     f"({type(e).__name__}: {e}); delete it and download or copy it again")


class _CountingReader:
    """File wrapper that advances a progress bar by the compressed bytes tarfile reads."""

    def __init__(self, raw, bar):
        self.raw, self.bar = raw, bar

    def read(self, n=-1):
        block = self.raw.read(n)
        self.bar.update(len(block))
        return block


class Member:
    """One regular file of an archive, readable once while the iteration stands on it."""

    def __init__(self, name: str, opener, archive: str):
        self.name, self._opener, self.archive = name.replace("\\", "/"), opener, archive

    def read(self) -> bytes:
        try:
            with self._opener() as f:
                return f.read()
        except _ARCHIVE_ERRORS as e:
            raise _unreadable(self.archive, e) from None

    def copy_to(self, dests: Sequence[str]) -> None:
        """Write the member to every path in `dests` (one read of the archive)."""
        outs = []
        try:
            for d in dests:
                os.makedirs(os.path.dirname(d), exist_ok=True)
                outs.append(open(d, "wb"))
            try:
                src = self._opener()
            except _ARCHIVE_ERRORS as e:
                raise _unreadable(self.archive, e) from None
            with src:
                while True:
                    try:
                        block = src.read(CHUNK)
                    except _ARCHIVE_ERRORS as e:
                        raise _unreadable(self.archive, e) from None
                    if not block:
                        break
                    for out in outs:
                        out.write(block)
        except OSError as e:
            raise DataError(f"cannot write {dests[0]} ({e.strerror or e}); free some space or "
                            f"pick another --data_dir") from None
        finally:
            for out in outs:
                out.close()


def iter_members(path: str, desc: str) -> Iterator[Member]:
    """Regular files of a .zip or (compressed) .tar in archive order, streamed in one pass."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                infos = [i for i in zf.infolist() if not i.is_dir()]
                with progress_bar(sum(i.compress_size for i in infos), desc) as bar:
                    for info in infos:
                        yield Member(info.filename, lambda info=info: zf.open(info), path)
                        bar.update(info.compress_size)
        else:
            with open(path, "rb") as raw, progress_bar(os.path.getsize(path), desc) as bar:
                head = raw.read(6)
                raw.seek(0)
                decompress = next((cls for magic, cls in _COMPRESSIONS if head.startswith(magic)),
                                  None)
                stream = _CountingReader(raw, bar)
                if decompress is not None:
                    stream = decompress(stream)
                with tarfile.open(fileobj=stream, mode="r|") as tf:
                    for m in tf:
                        if m.isfile():
                            yield Member(m.name, lambda m=m: tf.extractfile(m), path)
                    end = tf.offset
                # tarfile takes an early end of input for the end of the archive: make the
                # decompressor reach its end-of-stream marker (EOFError if cut short), and a
                # plain tar show its two zero end blocks
                if decompress is not None:
                    while stream.read(CHUNK):
                        pass
                elif os.path.getsize(path) < end + 1024:
                    raise EOFError("the tar ends without its end-of-archive blocks")
    except _ARCHIVE_ERRORS as e:
        raise _unreadable(path, e) from None


def first_file(path: str) -> str:
    """The name of the first regular, non-hidden file of an archive ("" when none)."""
    for m in iter_members(path, "peeking"):
        if not os.path.basename(m.name).startswith("."):
            return m.name
    return ""
