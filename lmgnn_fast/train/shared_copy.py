"""One copy per machine under ``torchrun``: the graph, the token ids and the embedding tables.

Without sharing, every rank of a job holds the whole graph, the token ids of every text
and every embedding table; ranks on one machine hold identical copies. With
:class:`MachineShare` (the default under ``torchrun``; ``run.share_memory: false`` turns it
off) the first local rank of each machine (the *leader*) writes each of these once into a
private folder under ``/dev/shm`` (``run.shared_dir`` elsewhere), every local rank maps
the files, and the leader unlinks them as soon as every rank has mapped them: the memory
stays alive exactly as long as some rank of the job maps it, so a killed job leaves
nothing behind. Per piece:

- **graph** (:meth:`MachineShare.share_graph`): the binary format of
  :mod:`lmgnn_fast.io.binary`, mapped copy-on-write (never written, so the pages stay
  shared); texts and string ids as :class:`~lmgnn_fast.io.binary.StringColumn` views;
- **token ids** (:meth:`MachineShare.share_tokens`): ``.npy`` arrays mapped the same way;
- **embedding tables** (:meth:`MachineShare.table_file`): a file each rank opens as an
  :class:`~lmgnn_fast.cache.EmbeddingCache` with ``backing="shared"`` (mapped shared,
  page-locked in place on CUDA), each with its own device cache of hot rows; a refresh
  writes every row once per machine (:func:`lmgnn_fast.train.data_parallel.encode_all_shared`).

Files are written under a temporary name and renamed into place; the folder name carries
the leader's process id, and a leader starting a job removes the folders of leaders that
no longer run (a job killed between writing and unlinking a file).
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import tempfile
import uuid

import numpy as np
import torch

from lmgnn_fast.distributed import DistContext, all_gather_object, barrier

__all__ = ["MachineShare", "PREFIX", "default_root", "remove_stale"]

#: Name prefix of the per-job folders: ``<PREFIX><leader pid>-<random>``.
PREFIX = "lmgnn-shared-"


def default_root() -> str:
    """``/dev/shm`` (memory-backed) when it exists and is writable, else the temp dir."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else tempfile.gettempdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(root: str) -> list[str]:
    """Remove the job folders under ``root`` whose leader process no longer runs.

    Returns:
        the removed folder names.
    """
    gone = []
    try:
        names = os.listdir(root)
    except OSError:
        return gone
    for name in names:
        if not name.startswith(PREFIX):
            continue
        pid = name[len(PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
            gone.append(name)
    return gone


def _host_key() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


class MachineShare:
    """The ranks of this machine and their shared folder (collective: every rank of the job
    constructs it at the same point).

    Args:
        ctx: the job context (several processes).
        root: where the job folder goes (default :func:`default_root`); must be the same
            file system for the ranks of a machine.

    Attributes:
        path: the job folder of this machine.
        is_leader: this rank writes the shared files of its machine.
        local_index: position of this rank among the ranks of its machine (``0..L-1``).
        local_world: ``L``, the number of ranks on this machine.
        machines: the number of machines of the job.

    Raises:
        RuntimeError: the ranks of one machine do not see the leader's folder (different
            file systems under ``root``).
    """

    def __init__(self, ctx: DistContext, root: str | None = None):
        self.ctx = ctx
        root = root or default_root()
        host = os.environ.get("LMGNN_TEST_HOST") or _host_key()  # testing aid: fake machines
        mine = None
        hosts = all_gather_object(host, ctx)
        ranks_here = [r for r, h in enumerate(hosts) if h == host]
        self.local_index = ranks_here.index(ctx.rank)
        self.local_world = len(ranks_here)
        self.machines = len(set(hosts))
        self.is_leader = self.local_index == 0
        if self.is_leader:
            os.makedirs(root, exist_ok=True)
            remove_stale(root)
            mine = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=root)
            nonce = uuid.uuid4().hex
            with open(os.path.join(mine, "job"), "w") as f:
                f.write(nonce)
            mine = (mine, nonce)
            atexit.register(self.close)
        folders = all_gather_object(mine, ctx)
        self.path, nonce = folders[ranks_here[0]]
        try:
            with open(os.path.join(self.path, "job")) as f:
                ok = f.read() == nonce
        except OSError:
            ok = False
        if not ok:
            raise RuntimeError(f"run.share_memory: rank {ctx.rank} cannot read the shared folder {self.path!r} "
                               f"written by rank {ranks_here[0]} on the same machine; set run.shared_dir to a "
                               "folder all local ranks see, or run.share_memory false")
        self._n = 0

    def _name(self, what: str) -> str:
        self._n += 1
        return os.path.join(self.path, f"{self._n}-{what}")

    def _after_mapped(self, path: str) -> None:
        """Every rank has mapped ``path``: the leader unlinks it (the mappings keep it alive)."""
        barrier(self.ctx)
        if self.is_leader:
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.exists(path):
                os.unlink(path)

    # ------------------------------------------------------------------ pieces
    def share_graph(self, build):
        """The graph, one copy per machine.

        Args:
            build: ``build() -> HeteroGraph``, called on the leader only.

        Returns:
            the graph loaded from the shared binary files (arrays mapped, texts and string
            ids as ``StringColumn``), equal to ``build()``.
        """
        from lmgnn_fast.io.binary import load_binary, save_binary

        dest = self._name("graph")
        if self.is_leader:
            g = build()
            save_binary(g, dest)  # written to a temporary sibling, renamed into place
            del g
        barrier(self.ctx)
        g = load_binary(dest, mmap=True, lazy_strings=True)
        self._after_mapped(dest)
        return g

    def share_tokens(self, make):
        """Token ids of one node type, one copy per machine.

        Args:
            make: ``make() -> TokenizedTexts``, called on the leader only.

        Returns:
            ``TokenizedTexts`` whose ``tokens`` and ``offsets`` map the shared files.
        """
        from lmgnn_fast.lm import TokenizedTexts

        dest = self._name("tokens")
        if self.is_leader:
            tok = make()
            tmp = f"{dest}.tmp-{os.getpid()}"
            os.makedirs(tmp)
            np.save(os.path.join(tmp, "tokens.npy"), tok.tokens.contiguous().numpy())
            np.save(os.path.join(tmp, "offsets.npy"), tok.offsets.contiguous().numpy())
            with open(os.path.join(tmp, "meta.json"), "w") as f:
                json.dump({"pad_id": tok.pad_id, "fingerprint": tok.fingerprint}, f)
            del tok
            os.replace(tmp, dest)
        barrier(self.ctx)
        with open(os.path.join(dest, "meta.json")) as f:
            meta = json.load(f)
        tokens = torch.from_numpy(np.load(os.path.join(dest, "tokens.npy"), mmap_mode="c"))
        offsets = torch.from_numpy(np.load(os.path.join(dest, "offsets.npy"), mmap_mode="c"))
        self._after_mapped(dest)
        return TokenizedTexts(tokens, offsets, int(meta["pad_id"]), meta["fingerprint"])

    def shared_cache(self, make, num_rows: int, dim: int, dtype: torch.dtype = torch.float32):
        """An embedding cache per rank in front of one ``[num_rows, dim]`` table per machine.

        Args:
            make: ``make(path) -> EmbeddingCache`` built with ``backing="shared"`` on ``path``.
            num_rows, dim, dtype: the table's shape and type (the file is sized for them).

        Returns:
            this rank's cache; every rank of the machine reads and writes the same rows.
        """
        dest = self._name("table")
        if self.is_leader:
            tmp = f"{dest}.tmp-{os.getpid()}"
            with open(tmp, "wb") as f:
                f.truncate(num_rows * dim * torch.empty((), dtype=dtype).element_size())
            os.replace(tmp, dest)
        barrier(self.ctx)
        cache = make(dest)
        self._after_mapped(dest)
        return cache

    def local_split(self, n: int) -> tuple[int, int]:
        """Contiguous ``[start, end)`` of ``range(n)`` this rank handles among its machine's ranks."""
        base, extra = divmod(n, self.local_world)
        start = self.local_index * base + min(self.local_index, extra)
        return start, start + base + (1 if self.local_index < extra else 0)

    def close(self) -> None:
        """Remove the job folder (leader; idempotent). Mapped pieces stay valid."""
        if self.is_leader and self.path:
            shutil.rmtree(self.path, ignore_errors=True)
