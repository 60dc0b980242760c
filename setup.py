"""Package discovery (the rest of the build is declared in pyproject.toml): every package
under host_tools/ and edge/, plus boards/ installed as the data package `edge_boards`."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["host_tools", "host_tools.*", "edge", "edge.*"])
    + ["edge_boards"]
)
