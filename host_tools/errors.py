"""The one error type of the host tools: `edgectl: message`, exit 2 (docs/CLI.md section 1)."""


class ToolError(Exception):
    """A failure the user can act on; printed as one line without a traceback."""


class Terminated(BaseException):
    """SIGTERM, raised in the main thread (host_tools/cli.py) so every `finally` stops the
    processes it started; a long-running service command treats it as its normal stop."""


def read_json_object(path: object, what: str) -> dict:
    """A JSON object from a file the user names; ToolError saying which `what` (e.g. "device
    config") could not be read, is not JSON (with the parser's position), or is not an object."""
    import json

    try:
        with open(str(path), "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ToolError(f"cannot read {what} {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ToolError(f"{what} {path} is not UTF-8 text (byte {e.start})") from None
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise ToolError(f"{what} {path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ToolError(f"{what} {path} must hold a JSON object")
    return doc
