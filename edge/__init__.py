# The edge telemetry agent (MicroPython). Nothing but the version, so importing edge.codec on
# the host pulls in nothing else. The one version source: the agent's status message, the
# package metadata (pyproject.toml) and `edgectl --version` all read it (CHANGELOG.md).
__version__ = "0.2.0"
