"""What can go wrong with a merge-code template: one root, each also a ValueError."""

from __future__ import annotations


class TemplateError(ValueError):
    """Root of every merge-code problem."""


class MissingMergeCode(TemplateError):
    """A merge code has no value for this customer; `code` names it (e.g. contact.attributes.vehicle)."""

    def __init__(self, code: str) -> None:
        super().__init__(f"merge code {code} has no value for this customer")
        self.code = code


class TemplateSyntaxProblem(TemplateError):
    """The template does not parse; `line` says where."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(f"line {line}: {message}" if line else message)
        self.line = line


class UnsafeTemplate(TemplateError):
    """The template tried to reach outside its merge codes."""


class TemplateTooCostly(UnsafeTemplate):
    """Rendering the template would take too much time, memory or output; the message says which."""
