"""Fresh large buffers, and the memory available for them.

A fresh matrix of hundreds of MB is first written page by page, and on the build machines the
first touch of its pages costs more than the arithmetic that fills it: 0.8-1.5 s for the 916 MB
Hessian of the decision-boundary MLP against ~0.5 s of products (docs/benchmarks.md). So the
large buffers (the N×P per-sample gradient matrix, the P×P Hessian) are taken as fresh anonymous
mappings (zero by the kernel's guarantee: no zeroing pass of our own) and their pages are faulted
in up front by ``madvise(MADV_POPULATE_WRITE)`` (Linux ≥ 5.14): one system call per chunk
instead of one trap per 4 KiB page, split over a few threads.

Huge pages: advised (MADV_HUGEPAGE) where the kernel allows them, except where a virtual
machine's balloon device takes free memory back from the guest (virtio free page reporting):
the kernel reports free 2 MiB blocks, exactly what a huge page needs, to the host, which
discards them, so a fresh huge page is faulted in again by the host, 4 KiB at a time. Measured
on such a host (Firecracker, 2 vCPUs): 916 MB with huge pages took 6.7 s when the blocks had
been free for more than ~2 s (every fresh process) and 0.3 s right after a free, against
0.8-1.0 s with 4 KiB pages either way; on a host without reporting the advice won in fresh
processes (the exact Hessian of benchmark (a), 0.42 s against 0.55 s).
Everything here is advice: where mmap or madvise is missing or refuses, the buffer is a plain
``torch.empty`` / ``torch.zeros`` and works the same.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import threading
from pathlib import Path

import torch

__all__ = ["empty_large", "zeros_large", "available_bytes", "fresh_bytes_threshold", "trim_heap"]

_HUGE_PAGE = 1 << 21
_MADV_HUGEPAGE = 14
_MADV_POPULATE_WRITE = 23
# buffers at least this large come from their own mapping (glibc maps them afresh anyway: its
# mmap threshold is at most 32 MiB on 64-bit systems, so nothing is lost by not reusing the heap)
_FRESH_BYTES = 32 << 20
# populate in pieces of this size, each thread its own run of pieces
_POPULATE_CHUNK = 64 << 20
_MAX_POPULATE_THREADS = 4

# None: decide from the system (see the module docstring); True / False: force (tests, benchmarks)
HUGE_PAGES: bool | None = None


def fresh_bytes_threshold() -> int:
    """Buffers of at least this many bytes are fresh, pre-faulted mappings (CPU, Linux)."""
    return _FRESH_BYTES


def _libc_madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        return libc.madvise
    except (OSError, AttributeError):
        return None


_madvise = _libc_madvise()


def _libc_malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_malloc_trim = _libc_malloc_trim()


def trim_heap() -> None:
    """Give the heap's free memory back to the system (glibc's malloc_trim). Between the phases
    of an assembly (and before an eigendecomposition) the temporaries of one phase, freed but
    still resident, would otherwise add to the next phase's peak: they come in other sizes than
    the next phase asks for, so the allocator cannot reuse them."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _free_page_reporting() -> bool:
    """Whether a virtio balloon takes free 2 MiB blocks back from this guest (feature bit 5,
    VIRTIO_BALLOON_F_REPORTING, of a bound balloon device)."""
    root = Path("/sys/bus/virtio/drivers/virtio_balloon")
    try:
        devices = [d for d in root.iterdir() if d.name.startswith("virtio")]
    except OSError:
        return False
    for d in devices:
        bits = _read(str(d / "features")).strip()
        if len(bits) > 5 and bits[5] == "1":
            return True
    return False


def _decide_huge_pages() -> bool:
    mode = _read("/sys/kernel/mm/transparent_hugepage/enabled")
    if "[never]" in mode or not mode:
        return False
    return not _free_page_reporting()


_huge_default: bool | None = None


def _use_huge_pages() -> bool:
    global _huge_default
    if HUGE_PAGES is not None:
        return HUGE_PAGES
    if _huge_default is None:
        _huge_default = _decide_huge_pages()
    return _huge_default


def _populate(start: int, length: int) -> bool:
    """Fault in [start, start + length) with MADV_POPULATE_WRITE, in chunks over a few threads
    (ctypes releases the GIL during the call). False if the kernel does not support it."""
    chunks = [(s, min(length, s + _POPULATE_CHUNK) - s) for s in range(0, length, _POPULATE_CHUNK)]
    threads = max(1, min(_MAX_POPULATE_THREADS, torch.get_num_threads(), len(chunks)))
    failed = []

    def run(part):
        for s, n in part:
            if _madvise(start + s, n, _MADV_POPULATE_WRITE) != 0:
                failed.append(ctypes.get_errno())
                return

    per = -(-len(chunks) // threads)
    parts = [chunks[i : i + per] for i in range(0, len(chunks), per)]
    workers = [threading.Thread(target=run, args=(p,), daemon=True) for p in parts[1:]]
    for w in workers:
        w.start()
    run(parts[0])
    for w in workers:
        w.join()
    return not failed


def _fresh(nbytes: int) -> torch.Tensor | None:
    """A uint8 tensor over a fresh anonymous mapping of ``nbytes`` (zero, pre-faulted, huge pages
    advised where they pay, see the module docstring), or None where that is not possible."""
    if _madvise is None:
        return None
    try:
        m = mmap.mmap(-1, nbytes + _HUGE_PAGE)  # one huge page more, to start on a 2 MiB boundary
    except (OSError, ValueError, OverflowError):
        return None
    whole = torch.frombuffer(m, dtype=torch.uint8)  # keeps the mapping alive as long as it lives
    base = whole.data_ptr()
    offset = ((base + _HUGE_PAGE - 1) & ~(_HUGE_PAGE - 1)) - base
    buf = whole[offset : offset + nbytes]
    start = base + offset
    length = (nbytes + mmap.PAGESIZE - 1) & ~(mmap.PAGESIZE - 1)
    if _use_huge_pages():
        _madvise(start, length & ~(_HUGE_PAGE - 1), _MADV_HUGEPAGE)  # advice: failure changes nothing
    if not _populate(start, length):
        # kernels before 5.14: one write per page (torch parallelises it)
        buf.view(-1)[:: mmap.PAGESIZE].zero_()
    return buf


def _large(n: int, p: int, dtype: torch.dtype, device, zero: bool) -> torch.Tensor:
    device = torch.device(device)
    itemsize = torch.empty((), dtype=dtype).element_size()
    nbytes = n * p * itemsize
    if device.type == "cpu" and nbytes >= _FRESH_BYTES:
        raw = _fresh(nbytes)
        if raw is not None:
            return raw.view(dtype).view(n, p)
    return (torch.zeros if zero else torch.empty)(n, p, dtype=dtype, device=device)


def empty_large(n: int, p: int, dtype: torch.dtype, device) -> torch.Tensor:
    """A fresh [n, p] tensor for a buffer that is about to be written whole; on Linux CPU, when
    large, a pre-faulted fresh mapping (its values are then zeros, but callers must not rely
    on it: elsewhere it is ``torch.empty``)."""
    return _large(n, p, dtype, device, zero=False)


def zeros_large(n: int, p: int, dtype: torch.dtype, device) -> torch.Tensor:
    """A fresh [n, p] tensor of zeros; on Linux CPU, when large, a pre-faulted fresh mapping
    (zero by the kernel: no zeroing pass), elsewhere ``torch.zeros``."""
    return _large(n, p, dtype, device, zero=True)


def available_bytes(device: torch.device) -> int:
    """Memory a new allocation can get on ``device`` right now (CPU: MemAvailable)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
