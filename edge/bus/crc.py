# CRC helpers for the bus and sensor drivers. Bitwise (no table built at import); frames are short.
# Each takes (buf, start, end) so callers never slice.


def crc16_modbus(buf, start, end):
    """Modbus RTU CRC16: poly 0xA001 (reflected 0x8005), init 0xFFFF, no final XOR.
    Sent low byte first (Modbus over Serial Line V1.02, 6.2.2). CRC('123456789') = 0x4B37."""
    crc = 0xFFFF
    for i in range(start, end):
        crc ^= buf[i]
        for _ in range(8):
            if crc & 1:
                crc = (crc >> 1) ^ 0xA001
            else:
                crc >>= 1
    return crc


def crc8_sensirion(buf, start, end):
    """Sensirion CRC-8: poly 0x31, init 0xFF, no reflection, no final XOR.
    SHT3x-DIS datasheet 4.12, table 20: CRC(0xBEEF) = 0x92."""
    crc = 0xFF
    for i in range(start, end):
        crc ^= buf[i]
        for _ in range(8):
            if crc & 0x80:
                crc = ((crc << 1) ^ 0x31) & 0xFF
            else:
                crc = (crc << 1) & 0xFF
    return crc


def crc8_maxim(buf, start, end):
    """Dallas/Maxim 1-Wire CRC-8: poly x^8+x^5+x^4+1 reflected (0x8C), init 0.
    DS18B20 datasheet "CRC generation"; a scratchpad including its CRC byte sums to 0."""
    crc = 0
    for i in range(start, end):
        b = buf[i]
        for _ in range(8):
            mix = (crc ^ b) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C
            b >>= 1
    return crc


def sum8(buf, start, end):
    """Tuya MCU serial protocol checksum: sum of every byte from the header, modulo 256."""
    s = 0
    for i in range(start, end):
        s += buf[i]
    return s & 0xFF
