"""Thread pools of their own, so that one kind of blocking work cannot starve another.

The default executor (``asyncio.to_thread``) serves the handlers' database work. Uploads store and
fsync whole files, and a burst of them must wait in their own bounded pool rather than fill it; key and
session checks must never queue behind either, or every request waits (and a flood of large uploads
locks everyone out).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

T = TypeVar("T")

AUTH_EXECUTOR = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ragsvc-auth")  # one indexed row lookup each
UPLOAD_EXECUTOR = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ragsvc-upload")


async def run_in(executor: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
    """``asyncio.to_thread`` on a given pool: the context (the request id the logs and jobs carry) goes along."""
    call = functools.partial(contextvars.copy_context().run, fn, *args)
    return await asyncio.get_running_loop().run_in_executor(executor, call)
