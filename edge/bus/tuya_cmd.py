# The module's side of each Tuya MCU command, per protocol variant (edge/bus/tuya.py holds the
# framing). Sources: Tuya "Wi-Fi general serial protocol" (normal, mains powered) and the
# "Wi-Fi low power" / "Wi-Fi power-off" serial protocol (battery). docs/INPUTS.md section 3.2.
#
# normal, MCU -> module:           low power, MCU -> module:
#   0x00 heartbeat answer/request    0x01 product info (answer to our query)
#   0x01 product info                0x02 ack of our Wi-Fi status
#   0x02 working mode                0x03 reset Wi-Fi, 0x04 reset and select mode (acked)
#   0x03 ack of our Wi-Fi status     0x05 real-time DP report (ack 0x00 = success)
#   0x04 / 0x05 reset Wi-Fi (acked)  0x06 local time request
#   0x07 DP report                   0x07 Wi-Fi test (answered "failed": no Tuya scan here)
#   0x1C local time request          0x08 record-type report: time (7 bytes) + DPs (ack 0x00)
#   0x22 sync DP report (ack 0x23)   0x0B signal strength (answered "failed")
#   0x2B network status request      0x10 DP cache request (success, 0 cached DPs: the agent
#   0x34 0x0B record-type report:         never sends DP commands)
#        time (8 bytes) + DPs
# Anything else is counted as an unhandled command; its bytes stay in the ledger.

HEARTBEAT = 0x00
PRODUCT = 0x01
MODE = 0x02
WIFI_STATE = 0x03
DP_QUERY = 0x08
NET_CLOUD = 0x04  # Wi-Fi status "connected to the cloud": the MCU then sends its data

_NO_TIME = b"\x00\x00\x00\x00\x00\x00\x00\x00"  # first byte 0: time not valid


def low_power_sign(ver, cmd, ln):
    """Why an MCU frame can only be the low-power protocol, or None. 0x06 / 0x08 / 0x10 are
    module -> MCU commands in the normal protocol; its MCU-side 0x05 is a 1-byte reset."""
    if cmd == 0x06 or cmd == 0x08 or cmd == 0x10 or (cmd == 0x05 and (ver == 0 or ln != 1)):
        return "cmd 0x%02x ver %d" % (cmd, ver)
    return None


def civil(days):
    """(year, month, day) of a day count since 1970-01-01 (proleptic Gregorian)."""
    z = days + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    mo = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (1 if mo <= 2 else 0), mo, d


def local_time(m):
    """The 8-byte time answer: valid flag, year % 100, month, day, hour, minute, second,
    weekday (1 = Monday); all zero while the agent's clock is not set."""
    wall = m.wall_ms() if m.wall_ms is not None else None
    if wall is None:
        return _NO_TIME
    secs = (wall + m.tz_ms) // 1000
    days = secs // 86400
    rem = secs - days * 86400
    y, mo, d = civil(days)
    return bytes(
        (1, y % 100, mo, d, rem // 3600, rem // 60 % 60, rem % 60, (days + 3) % 7 + 1)
    )  # 1970-01-01 was a Thursday


def _tiles(w, p, end):
    while p + 4 <= end:
        p += 4 + ((w[p + 2] << 8) | w[p + 3])
    return p == end


def _record(m, w, off, end, tlen, emit):
    """DPs after a time field of tlen bytes; a field one byte shorter is taken instead when
    only that makes the DP units fill the frame exactly (MCUs differ on the weekday byte)."""
    start = off + tlen
    if not _tiles(w, start, end) and end > start - 1 and _tiles(w, start - 1, end):
        start -= 1
    return _dps(m, w, start, end, emit)


def _dps(m, w, off, end, emit):
    out = m.table.decode(w, off, end, emit)
    m.handled = m.table.mapped > 0
    return out


def frame(m, ver, cmd, off, end, emit):
    """Handle one valid MCU frame (data in m._w[off:end]). Sets m.handled; returns readings."""
    w = m._w
    ln = end - off
    m.handled = True
    if m.auto:
        if cmd == HEARTBEAT and ln == 1:
            m.decide("normal", "heartbeat answer")
        elif cmd == PRODUCT and ver == 0:
            m.decide("low_power", "product info ver 0")
        else:
            why = low_power_sign(ver, cmd, ln)
            if why is not None:
                m.decide("low_power", why)
    if cmd == HEARTBEAT and ln == 0:
        # Case: the MCU sends its own heartbeat (some MCUs check the module this way): answer
        # it; it is not the answer to ours.
        m.mcu_heartbeats += 1
        m.send(HEARTBEAT, b"\x01")
        return 0
    if m.variant == "low_power":
        return _low_power(m, w, cmd, off, end, emit)
    return _normal(m, w, cmd, off, end, emit)


def _normal(m, w, cmd, off, end, emit):
    if cmd == 0x07:
        return _dps(m, w, off, end, emit)
    if cmd == 0x22:
        out = _dps(m, w, off, end, emit)
        m.send(0x23, b"\x01")
        m.handled = True
        return out
    if cmd == 0x34 and end > off and w[off] == 0x0B:
        out = _record(m, w, off + 1, end, 8, emit)
        m.send(0x34, b"\x0b\x00")
        return out
    if cmd == HEARTBEAT:
        m._hb_sent = None
        if w[off] == 0x00:
            # Case: first answer after the MCU (re)booted: run the init queries again (unless
            # the opening product query is still on its way).
            m.mcu_restarts += 1
            if not m.asked:
                m.send(PRODUCT)
        elif not m.online and m.product is None:
            m.send(PRODUCT)
        m.asked = False
        m.online = True
    elif cmd == PRODUCT:
        m.product = bytes(w[off:end])
        m.asked = False
        m.send(MODE)
    elif cmd == MODE:
        # Working mode: no data = the MCU shows the network state (cooperative), so the module
        # reports it (0x03); LED and reset GPIOs = the module processes it itself: no 0x03.
        m.self_processing = end > off
        if not m.self_processing:
            m.send(WIFI_STATE, bytes((m.net_status,)))
        m.send(DP_QUERY)
    elif cmd == 0x04 or (cmd == 0x05 and end - off == 1):
        m.send(cmd)  # reset Wi-Fi (and select the pairing mode): acknowledged, nothing to reset
    elif cmd == 0x1C:
        m.send(0x1C, local_time(m))
    elif cmd == 0x2B:
        m.send(0x2B, bytes((m.net_status,)))
    elif cmd == 0x34 and end > off and w[off] == 0x04:
        m.send(0x34, b"\x04\x00")  # the MCU asks whether record-type reports are supported
    elif cmd != WIFI_STATE:
        m.unhandled_cmd += 1
        m.handled = False
    return 0


def _low_power(m, w, cmd, off, end, emit):
    if cmd == 0x05:
        out = _dps(m, w, off, end, emit)
        m.send(0x05, b"\x00")
        return out
    if cmd == 0x08:
        out = _record(m, w, off, end, 7, emit)
        m.send(0x08, b"\x00")
        return out
    if cmd == PRODUCT:
        m.product = bytes(w[off:end])
        m.send(MODE, bytes((m.net_status,)))  # 0x02 is the Wi-Fi status in this protocol
    elif cmd == 0x06:
        m.send(0x06, local_time(m))
    elif cmd == 0x10:
        m.send(0x10, b"\x01\x00")
    elif cmd == 0x03 or cmd == 0x04:
        m.send(cmd)
    elif cmd == 0x07 or cmd == 0x0B:
        m.send(cmd, b"\x00\x00")
    elif cmd != MODE:
        m.unhandled_cmd += 1
        m.handled = False
    return 0
