"""Where a connection was acquired, for the pool's leak reports.

With ``leak_timeout`` set, every acquire notes the stack of the code that asked for the
connection. Two reports print it: the maintenance round's, for a connection held longer than
``leak_timeout``, and the pool's warning when a lease is garbage-collected without a release.
Without ``leak_timeout`` nothing is captured: the acquire fast path does not pay for it.

The capture keeps only code objects and line numbers -- no frame, so nothing the caller's frames
reference stays alive, and no source line is read until a report is written -- which keeps its
cost per acquire to a few microseconds.
"""

from __future__ import annotations

import sys
import traceback
from types import CodeType, FrameType
from typing import TypeAlias

__all__ = ["Stack", "capture_stack", "format_stack", "where_acquired"]

Stack: TypeAlias = list[tuple[CodeType, int]]
"""A captured stack: (code object, line number) per frame, innermost call first."""


def capture_stack(skip: int) -> Stack:
    """The caller's stack, leaving out its ``skip`` innermost frames (the pool's own)."""
    stack = []
    frame: FrameType | None = sys._getframe(skip + 1)  # (+1: this function's frame)
    while frame is not None:
        stack.append((frame.f_code, frame.f_lineno))
        frame = frame.f_back
    return stack


def format_stack(stack: Stack) -> str:
    """``stack`` as a traceback prints it, outermost call first, with its source lines."""
    summary = traceback.StackSummary.from_list(
        [(code.co_filename, lineno, code.co_name, None) for code, lineno in reversed(stack)]
    )
    return "".join(summary.format())


def where_acquired(stack: Stack | None) -> str:
    """The end of a report about a connection: where it was acquired, or how to find out."""
    if stack is None:
        return "(Set leak_timeout to log where it was acquired.)"
    return "It was acquired at:\n" + format_stack(stack)
