"""Read access to a download as users have it: a folder, or a tar archive (plain or compressed)."""

from __future__ import annotations

import tarfile
from pathlib import Path


class Source:
    """Files of a folder or tar archive by relative POSIX path; use as a context manager.

    A compressed archive is read from its start once to list it; reading its members in archive
    order is then fast, while jumping back and forth is not (gzip has no random access).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.tar: tarfile.TarFile | None = None
        if self.path.is_dir():
            self.names = sorted(p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file())
        elif self.path.is_file() and tarfile.is_tarfile(self.path):
            self.tar = tarfile.open(self.path)
            self.members = {m.name.removeprefix("./"): m for m in self.tar.getmembers() if m.isfile()}
            self.names = sorted(self.members)
        else:
            raise ValueError(f"{self.path} is neither a folder nor a tar archive")

    def read(self, name: str) -> bytes | None:
        """The bytes of one file, or None when there is no such file."""
        if self.tar is not None:
            member = self.members.get(name)
            return self.tar.extractfile(member).read() if member else None
        path = self.path / name
        return path.read_bytes() if path.is_file() else None

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
