# Appliance bus drivers (issue 6 item 2): line protocol, Tuya MCU serial protocol, Modbus RTU
# master. Each parser is streaming, resynchronises after garbage and counts what it rejects.
