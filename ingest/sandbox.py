"""Run a parse in a child process under a memory, a CPU-time and a wall-clock limit.

A hostile document (a zip or Flate bomb, input that sends a regex quadratic, ten thousand nested
parts) must cost one failed document, never the worker: in the worker's own process it could take
gigabytes, or hold the GIL long enough that the lease heartbeat stops and every other worker takes
the same poison job in turn. Here the worker only waits on a pipe (the GIL stays free for the
heartbeat); the child gets ``RLIMIT_AS`` and ``RLIMIT_CPU`` and is killed at the wall-clock limit;
whichever limit trips, the caller gets ``ParseLimitExceeded`` with a sentence naming it.

Children come from a ``forkserver`` with the parsers preloaded (unstructured and spaCy included): a
fresh interpreter started once, on the first parse (never a plain ``fork`` of a worker holding
torch/OpenVINO threads), from which each child forks in milliseconds: measured here, a PDF child
returns in ~35 ms, a DOCX in ~0.1 s. A document's memory dies with its child, so the worker's RSS
stays flat.

The interface is generic, for any parse-like work (OCR later): ``run_limited(fn, args, limits,
prepare)`` runs ``fn(*args)`` in a child and returns its (picklable) result.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import wait

from ingest.parsers import DocumentCaps, ParsedDocument
from ragsvc.errors import ParseError, ParseLimitExceeded

log = logging.getLogger(__name__)
MiB = 1024 * 1024
# Modules the forkserver imports once, so each child starts without importing them (a PDF child
# starts in ~35 ms). "__main__" (the ``ragsvc`` script) too, or every child would import it again to
# "fix up" its main module; ragsvc.cli for the same reason under ``python -m ragsvc``.
# ingest.preload_office loads unstructured and spaCy (numpy's BLAS pool is its only thread, and it
# is fork-safe): imported per child instead, each DOCX cost 3.6 s more.
PRELOAD = ["__main__", "ragsvc.cli", "ingest.parsers", "pypdf", "pypdfium2", "ingest.preload_office"]
OFFICE_KINDS = ("docx", "pptx", "html", "eml")
# A child that crashed on a signal after using at least this share of its memory allowance ran out
# of memory in C code: PDFium, for one, aborts when an allocation fails instead of raising. Half,
# because a buffer that doubles fails while the old half is what the parent last saw.
NEAR_LIMIT = 0.5
_POLL_S = 0.1
# A parse that failed in any way after its address space reached this share of the limit failed
# for want of memory (measured: a DOCX whose XML needs more than the limit peaks at 100%).
HIT_LIMIT = 0.9


@dataclass(frozen=True)
class ParseLimits:
    memory_mb: int = 2048
    cpu_s: int = 300
    timeout_s: float = 600.0
    caps: DocumentCaps = field(default_factory=DocumentCaps)

    @classmethod
    def from_settings(cls, settings) -> ParseLimits:  # noqa: ANN001 - ragsvc.settings.Settings
        return cls(settings.parse_memory_mb, settings.parse_cpu_s, settings.parse_timeout_s,
                   DocumentCaps(settings.max_pages, settings.max_office_xml_mb * MiB))


def parse_in_child(kind: str, data: bytes, limits: ParseLimits) -> ParsedDocument:
    """``ingest.parsers.parse`` on ``data`` in a limited child; raises ``ParseError`` (or its subclass
    ``ParseLimitExceeded``) with the user-facing reason."""
    return run_limited(_parse, (kind, data, limits.caps), limits, prepare=_prepare, prepare_args=(kind,))


def _parse(kind: str, data: bytes, caps: DocumentCaps) -> ParsedDocument:
    from ingest.parsers import parse

    return parse(kind, data, caps)


def _prepare(kind: str) -> None:
    """Import what the kind's parser needs before the memory limit is set: the limit is for the
    document, not for the libraries' code (torch alone maps ~500 MiB of address space)."""
    if kind in OFFICE_KINDS:
        from ingest import office

        office.preload()


def run_limited(fn: Callable, args: tuple, limits: ParseLimits, prepare: Callable | None = None,
                prepare_args: tuple = ()):
    """``fn(*args)`` in a child process under ``limits``; its result comes back pickled.

    A ``ParseError`` raised in the child comes back as one with the same sentence; a limit hit, an
    out-of-memory kill or a crash come back as ``ParseLimitExceeded`` or ``ParseError``."""
    ctx = _context()
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, fn, args, limits, prepare, prepare_args), daemon=True,
                       name="ragsvc-parse")
    proc.start()
    send.close()  # the child holds the only writing end: EOF on recv means it is gone
    deadline = time.monotonic() + limits.timeout_s
    base = peak = 0
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                proc.kill()
                proc.join()
                raise ParseLimitExceeded(
                    f"Parsing stopped: the document took longer than {limits.timeout_s:g} s to parse "
                    "(RAGSVC_PARSE_TIMEOUT_S); split it into smaller files or raise the limit.",
                    limit="RAGSVC_PARSE_TIMEOUT_S")
            # Waiting on the pipe and the child's sentinel releases the GIL: the heartbeat runs.
            if not wait([recv, proc.sentinel], timeout=min(left, _POLL_S)):
                peak = max(peak, _address_space(proc.pid))
                continue
            try:
                message = recv.recv()
            except (EOFError, OSError):
                message = None  # the child died without a word (a signal, the OOM killer)
            if message is not None and message[0] == "armed":
                base = message[1]
                continue
            if message is None:
                proc.join()
                used = (peak - base) / (limits.memory_mb * MiB) if base else 0.0
                raise _death_reason(proc.exitcode, limits, used)
            return _outcome(message, limits)
    finally:
        recv.close()
        if proc.is_alive():
            proc.kill()
        proc.join()


def _outcome(message: tuple, limits: ParseLimits):
    status, payload = message
    if status == "ok":
        return payload
    if status == "memory":
        raise _memory_exceeded(limits)
    if status == "parse_error":
        detail, limit = payload
        raise ParseLimitExceeded(detail, limit=limit) if limit else ParseError(detail)
    raise ParseError(f"The parser failed on this file ({payload}).")


def _memory_exceeded(limits: ParseLimits, how: str = "") -> ParseLimitExceeded:
    return ParseLimitExceeded(
        f"Parsing stopped: the document needed more than {limits.memory_mb} MiB of memory "
        f"(RAGSVC_PARSE_MEMORY_MB){how}; it is likely a decompression bomb or far larger than a real "
        "document. Split it, or raise the limit if it is genuine.", limit="RAGSVC_PARSE_MEMORY_MB")


def _death_reason(exitcode: int | None, limits: ParseLimits, used: float) -> ParseError:
    """Why a child died without sending its result, as the sentence the user reads; ``used`` is the
    largest share of its memory allowance the parent saw it use."""
    if exitcode == -signal.SIGXCPU:
        return ParseLimitExceeded(
            f"Parsing stopped: the document needed more than {limits.cpu_s} s of CPU time "
            "(RAGSVC_PARSE_CPU_S); a parser went very slow on its content. Split it or convert it to "
            "another format.", limit="RAGSVC_PARSE_CPU_S")
    if exitcode == -signal.SIGKILL:
        # Not our kill (the wall clock is handled before): the kernel's OOM killer, which prefers
        # the child (oom_score_adj 1000) to the worker.
        return _memory_exceeded(limits, "; the system stopped it when memory ran out")
    if exitcode is not None and exitcode < 0 and used >= NEAR_LIMIT:
        return _memory_exceeded(limits, "; the parser crashed when an allocation failed")
    what = f"exit code {exitcode}"
    if exitcode is not None and exitcode < 0:
        try:
            what = f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            what = f"signal {-exitcode}"
    return ParseError(f"The parser crashed on this file ({what}); the file is probably corrupt.")


def _vm_peak() -> int:
    """The most address space this process has had mapped, in bytes."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmPeak:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _address_space(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[0]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def _child(conn, fn: Callable, args: tuple, limits: ParseLimits, prepare: Callable | None,
           prepare_args: tuple) -> None:
    """The child's whole life: limits, the work, one message back."""
    _die_with_parent()
    base = 0
    try:
        if prepare is not None:
            prepare(*prepare_args)
        base = _set_limits(limits)
        conn.send(("armed", base))
        message = ("ok", fn(*args))
    except MemoryError:
        message = ("memory", None)
    except ParseLimitExceeded as exc:
        message = ("parse_error", (exc.detail, exc.limit))
    except ParseError as exc:
        message = ("parse_error", (exc.detail, None))
    except RecursionError:
        message = ("error", "its structure is nested too deeply")
    except Exception as exc:  # noqa: BLE001 - any failure is this document's, reported as its reason
        message = ("error", f"{type(exc).__name__}: {exc}")
    if message[0] != "ok" and base and _vm_peak() - base >= HIT_LIMIT * limits.memory_mb * MiB:
        # A library that turned a failed allocation into its own error (lxml: "XMLSyntaxError: unknown
        # error", unstructured: "could not be parsed (MemoryError)"): the memory limit is the reason.
        message = ("memory", None)
    try:
        conn.send(message)
    except MemoryError:  # pickling a result too big for the limit
        del message
        conn.send(("memory", None))
    conn.close()


def _set_limits(limits: ParseLimits) -> int:
    """RLIMIT_CPU counts from now (imports done); RLIMIT_AS allows ``memory_mb`` beyond the current
    address space. Returns that address space (the base), in bytes."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = int(usage.ru_utime + usage.ru_stime) + 1
    # Past the soft limit the kernel sends SIGXCPU (default: terminate); the hard one, 5 s later, SIGKILL.
    resource.setrlimit(resource.RLIMIT_CPU, (used + limits.cpu_s, used + limits.cpu_s + 5))
    base = _address_space(os.getpid())
    resource.setrlimit(resource.RLIMIT_AS, (base + limits.memory_mb * MiB, base + limits.memory_mb * MiB))
    return base


def _die_with_parent() -> None:
    """The child dies with its forkserver (which exits with the worker), and is the OOM killer's
    first choice, so that a bomb that exhausts the machine costs the child, not the worker."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        log.debug("could not set the parse child's death signal or OOM score", exc_info=True)


_ctx = None


def _context():
    global _ctx
    if _ctx is None:
        _ctx = multiprocessing.get_context("forkserver")
        _ctx.set_forkserver_preload(PRELOAD)
    return _ctx
