"""The heap figures of `edgectl bench memory` measured on two ports (host_tools/bench/heap32.py):
the WebAssembly MicroPython under node is 32-bit, its garbage is collected between the probe's
steps, and ROMFS keeps the agent's bytecode (and the image itself) off the heap."""

import shutil

import pytest

from host_tools.bench import heap32, tlsheap
from host_tools.paths import local_mpy

pytestmark = pytest.mark.skipif(
    not shutil.which("node") or not shutil.which("npm"), reason="needs node and npm (.ci/run)"
)


@pytest.fixture(scope="module")
def figures():
    return heap32.measure(5000, local_mpy())


def test_32bit_port_objects_are_smaller_than_64bit(figures):
    # the same modules, the same .mpy bytecode: only word-sized fields and GC blocks differ
    assert 0 < figures["heap32_code_bytes"] < figures["heap32_code_64bit_bytes"]
    assert figures["heap32_code_modules"] >= 60
    # what does not load there is named with the reason, never estimated
    why = figures["heap32_not_loaded_why"]
    assert "invalid arch" in why["edge.store.segment"]
    assert set(why) == set(figures["heap32_not_loaded"].split(","))
    assert "edge.mqtt.client" in figures["heap32_module_bytes"]  # loads beside the socket stand-in


def test_working_set_is_collected_between_steps(figures):
    # The port collects only between top-level runs: measured inside one run, the 5,000 readings
    # left every batch on the heap (2.3 MB for 20,000). Stepped, it is the data path's own.
    assert figures["heap32_working_set_readings"] == 5000
    assert 0 < figures["heap32_working_set_bytes"] < 32 * 1024


def test_romfs_keeps_code_and_image_off_the_heap(figures):
    for key in ("code_heap_bytes", "heap32_code_bytes", "heap32_agent_code_bytes"):
        copied = figures[key + ("_mpy" if key == "code_heap_bytes" else "")]
        romfs = figures[key + "_romfs"]
        assert 0 < romfs < copied, key
    # the image is read into the unix port's heap before the baseline: counted, the figure
    # would exceed the image
    assert figures["code_heap_bytes_romfs"] < figures["romfs_image_bytes"]


def test_romfs_leaves_names_interned_on_the_heap(figures):
    # MicroPython interns every name a module uses when it loads it, from ROMFS too: a share of
    # what ROMFS leaves, never more than all of it
    for key in ("code_qstr_bytes_romfs", "heap32_agent_qstr_bytes_romfs"):
        assert 0 < figures[key], key
    assert figures["heap32_agent_qstr_bytes_romfs"] < figures["heap32_agent_code_bytes_romfs"]


def test_tls_session_heap_on_the_unix_port():
    r = tlsheap.measure()  # the agent's own context, a verified handshake and an echo
    assert 0 < r["tls_context_heap_bytes"] < 16 * 1024, r
    assert 0 < r["tls_session_heap_bytes"] < 16 * 1024, r


def test_module_order_puts_dependencies_first():
    order = heap32.edge_modules()
    assert order.index("edge.codec") < order.index("edge.batchv2")
    assert order.index("edge.store") < order.index("edge.store.rawfmt")
    assert not any(m.startswith("edge.hal.unix") for m in order)
