"""Boards: flash firmware, deploy the agent, the virtual board, dump images."""
