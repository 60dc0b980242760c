"""The agent under unix MicroPython: run it, replay captures into it, demo."""
