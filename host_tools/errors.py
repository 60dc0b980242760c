"""The one error type of the host tools: `edgectl: message`, exit 2 (STYLE 7.2.3)."""


class ToolError(Exception):
    """A failure the user can act on; printed as one line without a traceback."""
