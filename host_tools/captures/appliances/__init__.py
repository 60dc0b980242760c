"""Appliance models (Modbus RTU slave, Tuya MCU, line appliances) with fault injection: one
model per appliance, used live on a pty or port (tests, `edgectl simulate --serve`) and to
write synthetic captures (`edgectl simulate`)."""

from host_tools.captures.appliances.faults import KINDS as FAULT_KINDS
from host_tools.captures.appliances.faults import Faults
from host_tools.captures.appliances.framing import (
    corrupt_check,
    modbus_crc,
    modbus_exception,
    modbus_request,
    modbus_response,
    tuya_dp,
    tuya_frame,
)
from host_tools.captures.appliances.line import LineAppliance, fridge_lines
from host_tools.captures.appliances.link import Pty, SerialLink, Server, serve
from host_tools.captures.appliances.modbus import ModbusSlave
from host_tools.captures.appliances import meter
from host_tools.captures.appliances.tuya import LowPowerSensor, TuyaMCU

__all__ = [
    "FAULT_KINDS",
    "Faults",
    "LineAppliance",
    "LowPowerSensor",
    "ModbusSlave",
    "Pty",
    "SerialLink",
    "Server",
    "TuyaMCU",
    "corrupt_check",
    "fridge_lines",
    "meter",
    "modbus_crc",
    "modbus_exception",
    "modbus_request",
    "modbus_response",
    "serve",
    "tuya_dp",
    "tuya_frame",
]
