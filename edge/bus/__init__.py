# Appliance bus drivers (docs/INPUTS.md 3): line protocol, Tuya MCU serial protocol, Modbus RTU
# master. Each parser is streaming, resynchronises after garbage and counts what it rejects.
