"""Errors that reach the user as one line naming what was wrong and what was expected."""

from __future__ import annotations


class LayerwiseError(Exception):
    """Base class: its message is a complete one-line explanation for the user."""


class ConfigError(LayerwiseError, ValueError):
    """A configuration value is invalid (names the field and the constraint)."""


class UnknownNameError(LayerwiseError, KeyError):
    """A preset, family, dataset or strategy name is not known."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InputShapeError(LayerwiseError):
    """An input does not fit the model (names the layer and the shapes)."""


class ForwardFailure(LayerwiseError):
    """A forward pass failed while the analysis traced it.

    ``module`` (qualified name, "" for the model itself), ``module_cls`` and
    ``input_shapes`` say where; ``partial`` is what was analysed before the failure
    (an ``Analysis`` whose rows and totals come from the module tree), for a report
    that shows how far the forward got.
    """

    def __init__(self, message: str, module: str = "", module_cls: str = "", input_shapes=None, partial=None):
        super().__init__(message)
        self.module, self.module_cls, self.input_shapes, self.partial = module, module_cls, input_shapes, partial


class TracedInputError(ForwardFailure, InputShapeError):
    """The model (or a torch op inside it) rejected the input: a user's input error."""


class InternalError(ForwardFailure):
    """layerwise's own tracing failed (a bug in layerwise, not in the model or the input)."""


class LoadError(LayerwiseError):
    """A file or checkpoint could not be loaded (names the file and the problem)."""


def suggest(name: str, choices) -> str:
    """' Did you mean: a, b?' for the closest names, or ''."""
    import difflib

    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""
