"""Errors of the template engine: refused at load (syntax) or per evaluation (one packet)."""

from __future__ import annotations

from typing import final


class TemplateError(Exception):
    """Any template failure; ``reason`` is a short metric label value."""

    reason: str = "template_error"


@final
class TemplateSyntaxError(TemplateError):
    """A template that does not parse: ``name`` (e.g. the step), 1-based ``line`` and ``column``."""

    reason = "syntax"

    def __init__(self, name: str, line: int, column: int, message: str) -> None:
        super().__init__(f"{name}:{line}:{column}: {message}")
        self.name = name
        self.line = line
        self.column = column
        self.message = message


@final
class TemplateEvalError(TemplateError):
    """One evaluation failed; ``reason`` says why (``budget``, ``output_too_large``,
    ``type_error``, ``function_error``, ``index_out_of_range``, ``unknown_function``, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@final
class FunctionError(Exception):
    """Raised by a template function on bad arguments (Go would return an error)."""
