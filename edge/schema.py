# The device config schema: every key with its type, range, default and meaning, in one table.
# Shared contract module: the agent checks its config with it at boot (edge/config.py), the host
# imports this same file for `edgectl check` and `edgectl deploy`, and docs/CONFIG.md is
# generated from it. Written in the MicroPython / CPython common subset.
#
# Heap: the table is a few strings (no object per key, no large block), read row by row while
# checking; the agent imports this module only while it checks and drops it afterwards
# (edge/config.py), so neither code nor table stay on the device's heap.

import json

from edge import wire

# One row per key:  PATH  TYPE  DEFAULT  RANGE  MEANING   (columns split on whitespace)
#  PATH     dotted; `[]` is a list item, `*` any key of a map, `$x` a shared group of keys
#           (used by a row whose RANGE is `$x`); `@a,b` applies the row only inside an input
#           whose `type` is a or b.
#  TYPE     int num bool str file name topic hex obj map list null any, alternatives joined by
#           `,` (num: an int or a float; file: a str naming a file on the board, which
#           `edgectl deploy` copies from the device's provisioned secrets or refuses to deploy).
#  DEFAULT  a JSON literal filled in when the key is absent (`null` is not filled in: absent and
#           null mean the same, and the device's heap keeps no entry for it); `-` optional, no
#           default (absence has the meaning given); `!` required; `*` from edge/example.py.
#  RANGE    `-` none; alternatives joined by `|`: `lo..hi` (either end may be left out) bounds
#           an int's value or a str / hex / list's length, anything else is an allowed value.
#           For a map: `name` (keys are names), `n:lo..hi` (decimal keys in range), `lo..hi`
#           (key length). A `$x` range gives an object the keys of group `$x`.
#  MEANING  the rest of the line, for docs/CONFIG.md.
# Adding a key is adding its row here (then `make docs-config`, see docs/CONFIG.md).
TABLE = (
    """
device_id name "sim-0001" - device identity: the MQTT client id and the `{prefix}/{device_id}/` topic level
board name "unix-sim" - board file name (`boards/NAME.json`; on a deployed board `/board.json`)
board_overrides obj - - keys merged over the board file (docs/INPUTS.md, boards/README.md)
board_overrides.pins map - name GPIO numbers by pin name
board_overrides.pins.* int ! 0..48 GPIO number
board_overrides.uarts map - name UARTs by name
board_overrides.uarts.* obj ! $uart a UART of the board
board_overrides.i2c obj - $i2c the board's I2C bus
board_overrides.watchdog_ms int - 0|2000.. hardware watchdog timeout of the board
wifi obj - - Wi-Fi station (ESP32); absent: station mode from the provisioned `/secrets/wifi.json` (`{"ssid", "password"}`) when present, else the network is left as it is
wifi.ssid str ! 1..32 network name
wifi.password str - 0..64 WPA passphrase; absent: an open network (prefer the secrets file: config files are not secret)
wifi.hostname str - 1..32 DHCP host name; absent: the device id
wifi.timeout_ms int - 1000..120000 how long one association attempt may take before the backoff; absent: 20000
""",
    """
mqtt obj {} - broker connection (docs/MQTT.md)
mqtt.host str "127.0.0.1" 1..253 broker host name or address
mqtt.port int 1883 1..65535 broker TCP port
mqtt.prefix topic "edge" 1..64 first topic level of every topic
mqtt.brokers list - 1..8 brokers to fail over between, in order (docs/MQTT.md 10); absent: `mqtt.host` and `mqtt.port` alone
mqtt.brokers[] obj ! - one broker
mqtt.brokers[].host str ! 1..253 host name or address; every address it resolves to is tried
mqtt.brokers[].port int - 1..65535 TCP port; absent: 1883
mqtt.brokers[].server_name str - 1..253 name its TLS certificate must carry; absent: `mqtt.tls.server_hostname`, else its host
mqtt.backoff_cap_ms int - 500..600000 longest wait after a round in which every broker failed, once an outage is a minute old (4000 before: docs/MQTT.md 3; full jitter below it); absent: 30000
mqtt.keepalive int 30 0..65535 MQTT keepalive in seconds; 0 = off
mqtt.window int 8 1..64 QoS 1 publishes in flight
mqtt.user str,null null 1..256 MQTT user name; null: anonymous
mqtt.password str,null null 0..256 MQTT password
mqtt.tls obj,null null - TLS with CA verification; null: plain TCP
mqtt.tls.ca file ! 1..255 CA certificate file (DER)
mqtt.tls.cert file - 1..255 client certificate file (DER), with `key`
mqtt.tls.key file - 1..255 client private key file (DER)
mqtt.tls.server_hostname str - 1..253 name the server certificate must carry; default `mqtt.host`
mqtt.e2e_ack bool - - wait for the collector's end-to-end ack before a batch counts as delivered; absent: false
mqtt.e2e_timeout_ms int - 100..600000 resend a batch whose end-to-end ack did not come in this time; absent: 5000
""",
    """
categories map * name consent categories; `essential` is the only one sent without consent (docs/CONSENT.md); merged key by key over the defaults
categories.* obj ! - storage policy of one category
categories.*.quota int 0 0.. bytes of flash the category may hold; 0 = no quota
categories.*.evict str "drop_oldest" drop_oldest|reject_new what makes room when the quota is full
categories.*.latency_ms int - 0..86400000 latency budget: the longest a reading of this category waits on the device before it is sent, while connected (docs/MQTT.md 9); absent: `batch.latency_ms`
categories.*.minimise list - - data minimisation rules before storage (docs/CONSENT.md 5)
categories.*.minimise[] obj ! - one rule
categories.*.minimise[].op str ! drop|coarsen|pseudonymise what the rule does
categories.*.minimise[].field str ! ts|value the field of a reading it touches (only `value` can be pseudonymised)
categories.*.minimise[].step int - 1.. coarsen: round down to a multiple of this
categories.*.minimise[].channels list - - channel ids of this category the rule covers; absent: all
channels list * 1..256 every value the device may report (docs/INPUTS.md 1); replaces the default list
channels[] obj ! - one channel
channels[].id int ! 0..255 channel id on flash and on the wire
channels[].name str ! 1..64 name (`cabinet_temp`)
channels[].category name ! - consent category (declared in `categories`)
channels[].unit str - 1..16 unit of the value (`°C`), sent to the collector (docs/INPUTS.md 1)
channels[].decimals int - 0..6 the stored integer is the value times 10^decimals; absent: 0
channels[].deadband int - 0.. report only moves larger than this; 0 = every change
channels[].interval_ms int - 0.. at most one report per interval
channels[].max_silent_ms int - 0.. re-report an unchanged value after this long
channels[].urgent bool - - a reading of this channel is sent at once with what its category holds, whatever the budget (an alarm); absent: false
""",
    """
inputs list [] 0..32 appliance buses and sensors (docs/INPUTS.md 2); empty: the simulated fridge when `sim.enabled`, else a config error at boot
inputs[] obj ! - one input
inputs[].type str ! line|tuya|modbus|sht3x|ds18b20|adc|pulse the kind of input
inputs[].uart@line,tuya,modbus str,obj ! $uart a board UART name or a UART object
inputs[].format@line str - kv|fields|csv|json|regex line format (docs/INPUTS.md 3.1); absent: kv
inputs[].prefix@line str - 1..32 only lines starting with this are parsed, from after it
inputs[].max_line@line int - 16..2048 longest line in bytes; absent: 256
inputs[].sep@line str - 1..1 kv: pair separator (absent `;`), fields: field separator (absent: spaces), csv: cell separator (absent `,`)
inputs[].assign@line str - 1..1 kv: key / value separator; absent `=`; `" "`: words alternate key and value
inputs[].keys@line map - 1..64 kv and json (`a.b`: nested): `{"KEY": target}`
inputs[].keys.*@line int,obj ! 0..255|$target channel id or target object
inputs[].fields@line map - n:0..255 fields: `{"index": target}`
inputs[].fields.*@line int,obj ! 0..255|$target channel id or target object
inputs[].columns@line map - 1..64 csv: `{"column name": target}`
inputs[].columns.*@line int,obj ! 0..255|$target channel id or target object
inputs[].header@line list - 1..64 csv: fixed column names; absent: learned from a header line
inputs[].header[] str ! 1..64 a column name
inputs[].pattern@line str - 1..255 regex: pattern searched in each line; `(?P<name>...)` groups allowed
inputs[].groups@line map - 1..32 regex: `{"group name or number": target}`
inputs[].groups.*@line int,obj ! 0..255|$target channel id or target object
inputs[].dps@tuya map ! n:1..255 `{"dpid": target}` Tuya datapoints
inputs[].dps.*@tuya int,obj,list ! 0..255|1..8|$target channel id, target object, or a list of targets (slices of one DP)
inputs[].dps.*[] int,obj ! 0..255|$target one target of the DP
inputs[].protocol@tuya str - auto|normal|low_power protocol variant (docs/INPUTS.md 3.2); absent: auto
inputs[].tz_offset_min@tuya int - -900..900 minutes added to UTC in the local time answered to the MCU; absent: 0
inputs[].heartbeat_ms@tuya int 15000 1000..600000 heartbeat period once the MCU answers
inputs[].max_len@tuya int 256 16..1024 largest frame data accepted
inputs[].slave@modbus int ! 1..247 Modbus slave address
inputs[].reads@modbus list ! 1..32 register reads, one request each
inputs[].reads[] obj ! - one read
inputs[].reads[].fn int 3 3|4 3 holding registers, 4 input registers
inputs[].reads[].addr int 0 0..65535 first register
inputs[].reads[].count int 1 1..125 registers read
inputs[].reads[].map map ! n:0..65535 `{"register": target}` inside the read
inputs[].reads[].map.* int,obj,list ! 0..255|1..16|$target channel id, target object, or a list of targets (bit fields of one register)
inputs[].reads[].map.*[] int,obj ! 0..255|$target one target of the register
inputs[].interval_ms@modbus int 1000 10..86400000 poll period
inputs[].timeout_ms@modbus int 300 10..60000 reply timeout
inputs[].retries@modbus int 2 0..10 retries after a timeout or busy reply
inputs[].i2c@sht3x str,obj - $i2c I2C bus: a name or an object; absent: the board's bus
inputs[].addr@sht3x int 68 68|69 I2C address (0x44, 0x45)
inputs[].pin@ds18b20,adc,pulse int,str ! 0..48|1..32 GPIO number or a board pin name
inputs[].rom@ds18b20 hex - 16 sensor ROM code; absent: SKIP ROM (one sensor on the wire)
inputs[].cal@adc list - 2 two-point calibration `[[raw0, value0], [raw1, value1]]` on `read_u16()`
inputs[].samples@adc int 4 1..64 readings averaged
inputs[].mul@pulse int 1 1.. pulses to value: `count * mul // div`
inputs[].div@pulse int 1 1.. see `mul`
inputs[].debounce_ms@pulse int 0 0..1000 ignore edges closer than this
inputs[].interval_ms@sht3x,ds18b20,adc,pulse int 2000 10..86400000 sample period
inputs[].channels@sht3x,ds18b20,adc,pulse obj ! - channel ids of the sensor's values
inputs[].channels.temp@sht3x,ds18b20 int ! 0..255 temperature in centi-degC
inputs[].channels.rh@sht3x int - 0..255 relative humidity in centi-%RH
inputs[].channels.value@adc int ! 0..255 calibrated value
inputs[].channels.count@pulse int ! 0..255 cumulative count
inputs[].channels.delta@pulse int - 0..255 pulses in the last interval
inputs[].sim any - - unix only: the script the simulated sensor follows (docs/INPUTS.md 2)
""",
    """
$uart.name str - 1..32 a board UART whose keys this object overrides
$uart.path str - 1..255 unix: the pty or tty
$uart.id int - 0..2 ESP32: UART number
$uart.feed str - 1..255 unix replay only: the capture file the replay HAL plays into this UART (docs/REPLAY.md)
$uart.serve str - 1..255 unix replay only: the Modbus exchanges the replay HAL answers requests with (docs/REPLAY.md 3.1)
$uart.tx int - 0..48 ESP32: TX GPIO
$uart.rx int - 0..48 ESP32: RX GPIO
$uart.baud int - 300..5000000 baud rate (board file: 9600)
$uart.de int - 0..48 RS485 driver-enable GPIO
$i2c.name str - 1..32 the board bus name
$i2c.id int - 0..1 I2C controller
$i2c.scl int - 0..48 SCL GPIO
$i2c.sda int - 0..48 SDA GPIO
$i2c.freq int - 1000..1000000 clock in Hz
$target.ch int ! 0..255 channel id
$target.mul int 1 ..-1|1.. value = raw * mul // div (integer maths)
$target.div int 1 ..-1|1.. see `mul`
$target.scale num - - value = raw * mul / div * scale + offset, in the channel's unit (docs/INPUTS.md 2.1)
$target.offset num - - see `scale`
$target.enum@line map - 1..16 text values to integers `{"OPEN": 1}`
$target.enum.*@line int ! - integer for the label
$target.map@tuya map - 1..64 string DP labels to integers
$target.map.*@tuya int ! - integer for the label
$target.slice@tuya obj - $slice a value taken from the DP's bytes (docs/INPUTS.md 2.2)
$target.raw@tuya obj - $slice older name of `slice`
$target.type@modbus str - u16|i16|u32|i32|u64|i64|f32|f64 register value type (docs/INPUTS.md 2.2); absent: u16
$target.swap@modbus bool,str - none|byte|word|word_byte byte order; true: word (low word first)
$target.bits@modbus list - 2 bit field `[lowest bit, count]`
$target.bits[] int ! 0..63 -
$target.bit@modbus int - 0..63 one bit
$slice.offset int - 0..1023 byte offset in the DP value; absent: 0
$slice.type str - u8|i8|u16|i16|u24|i24|u32|i32|u64|i64|f32|f64 value type; absent: u32
$slice.swap bool,str - none|byte|word|word_byte byte order
$slice.bits list - 2 bit field `[lowest bit, count]`
$slice.bits[] int ! 0..63 -
$slice.bit int - 0..63 one bit
$slice.size int - 1|2|4 older form: bytes, big-endian
$slice.signed bool - - older form: two's complement
""",
    """
store obj {} - the flash store (docs/FORMAT.md)
store.backend str "auto" auto|rawlog|segments where readings are kept: `rawlog` the raw record log on the board's log partition (docs/FORMAT.md 8), `segments` segment files on littlefs (docs/FORMAT.md 2), `auto` the raw log when the board has its partition, else segments
store.path str "store" 1..255 directory of the store on the filesystem
store.flush_ms int 1000 0..3600000 commit at least this often
store.flush_n int 50 1..10000 commit after this many readings
store.segment_bytes int 16384 512..1048576 size of one segment file (segments only)
store.total_bytes int 1572864 4096.. bytes all categories together may use (the raw log is also bounded by its partition)
batch obj {} - batching for MQTT
batch.max_readings int 100 1..1000 readings per batch
batch.latency_ms int 200 0..86400000 latency budget of a category without its own (`categories.*.latency_ms`); a batch holds everything due within it (docs/MQTT.md 9)
batch.format int 1 1..2 payload format (docs/FORMAT.md 3): 1 = fixed 11-byte entries; 2 = columns per channel (3.8), sent as format 1 when that is not smaller
batch.names bool false - format 2: also name the device and category in the payload (the topic always does)
sim obj {} - the simulated fridge (unix, no `inputs`)
sim.enabled bool false - run the simulated fridge when `inputs` is empty (the `unix-sim` board and `edgectl demo` set it); never on by default, so a board with no inputs never sends made-up readings
sim.rate_hz int 50 0..10000000 readings per second (benchmarks run the simulator at up to 10^6)
sim.count int 0 0.. stop after this many readings; 0 = no limit
sim.seconds int 0 0.. stop after this long; 0 = no limit
sim.seed int 1 0.. random seed
status_ms int 900000 0..86400000 period of the retained status snapshot (docs/HEALTH.md 1); 0 = 900000
status_change_ms int 60000 0..86400000 a change of drops or errors is reported at most this often between snapshots
status_detail str "compact" compact|full what the snapshot holds: what an operator acts on, short keys; or the full document (also the reply to cmd/status)
sample_ms int 10 1..1000 how long the sampler sleeps when its inputs gave nothing (UARTs keep their bytes meanwhile in the driver's buffer)
clock obj - - the wall clock (docs/INPUTS.md 6)
clock.ntp_host str - 1..253 NTP server; absent: pool.ntp.org
clock.synced_at_ms int,null null 0.. unix only: NTP succeeds this long after start
consent obj - - consent updates (docs/CONSENT.md)
consent.key hex - 32..128 update signing key; absent (and no `key_file`): unsigned updates
consent.key_file file - 1..255 file holding the key in hex
consent.local_dir str - 1..255 directory of the consent state; default: the store's
backend obj - - the key this device shares with its collector (docs/MQTT.md 8)
backend.key hex - 32..128 authenticates the collector's end-to-end acks and signs consent receipts; absent (and no `key_file`): acks are taken unauthenticated, receipts go unsigned
backend.key_file file - 1..255 file holding the key in hex
watchdog_ms int,null null 0|2000.. hardware watchdog timeout; null: the board file's
ota obj - - over-the-air updates and remote config (docs/OTA.md); never changed by cmd/config
ota.key file - 1..255 release public key file (60 bytes, `edgectl release-key`); absent: /secrets/release.pub
ota.trial_ms int - 5000..3600000 a trial (new agent or config) that has not proven itself by then rolls back; absent: 120000
ota.settle_ms int - 0..600000 no trial is confirmed before it has run this long; absent: 3000
ota.window int - 1..16 update chunks subscribed at once; absent: 4
""",
)

_MAX_CATEGORIES = 32  # the category index is a u8 on flash; 32 keeps the per-category tables small


def _parse(line, meaning=False):
    f = line.split(None, 4)
    path = f[0]
    cond = None
    at = path.find("@")
    if at > 0:
        cond = path[at + 1 :].split(",")
        path = path[:at]
    if meaning:
        return (path, f[1].split(","), f[2], f[3], cond, f[4] if len(f) > 4 else "")
    return (path, f[1].split(","), f[2], f[3], cond)


def rows():
    """The whole table as (path, types, default, range, cond, meaning) tuples, in order
    (for the docs; the check reads rows one parent at a time)."""
    out = []
    for chunk in TABLE:
        for line in chunk.split("\n"):
            if line:
                out.append(_parse(line, True))
    return out


def _kids(spath):
    """{leaf name: [rows]} of the keys directly under spath ("" is the top level), scanning
    the table in place (no object for a row that is not a child)."""
    out = {}  # type: dict
    n = len(spath)
    for chunk in TABLE:
        i = 1
        end = len(chunk)
        while i < end:
            j = chunk.find("\n", i)
            if j < 0:
                j = end
            sp = chunk.find(" ", i, j)
            k = i + n + 1 if n else i
            if k < sp and (not n or (chunk[k - 1] == "." and chunk.startswith(spath, i))):
                leaf_end = sp
                at = chunk.find("@", k, sp)
                if at > 0:
                    leaf_end = at
                if chunk.find(".", k, leaf_end) < 0 and chunk.find("[", k, leaf_end) < 0:
                    leaf = chunk[k:leaf_end]
                    if leaf not in out:
                        out[leaf] = []
                    out[leaf].append(_parse(chunk[i:j]))
            i = j + 1
    return out


def _applies(row, kind):
    return row[4] is None or kind in row[4]


def default_of(row):
    d = row[2]
    if d in ("-", "!"):
        return None
    if d == "*":
        # shared, not copied: edge/example.py is resident on the device (it is the embedded
        # config), and nothing writes into a config after the check
        from edge import example

        return example.DEVICE[row[0]]
    return json.loads(d)


# --- type and range checks --------------------------------------------------------------------
def _is_name(v):
    return wire.name_ok(v)  # the one rule (device ids, categories, prefix, board names)


def _is_type(v, t):
    if t == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if t == "num":
        return (isinstance(v, int) or isinstance(v, float)) and not isinstance(v, bool)
    if t == "bool":
        return isinstance(v, bool)
    if t in ("str", "file"):
        return isinstance(v, str)
    if t == "name":
        return _is_name(v)
    if t == "topic":
        return isinstance(v, str) and v and not ("/" in v or "+" in v or "#" in v or "\0" in v)
    if t == "hex":
        if not isinstance(v, str):
            return False
        for c in v:
            if c not in "0123456789abcdefABCDEF":
                return False
        return True
    if t in ("obj", "map"):
        return isinstance(v, dict)
    if t == "list":
        return isinstance(v, list)
    if t == "null":
        return v is None
    return t == "any"


_WHAT = {
    "int": "an integer",
    "num": "a number",
    "bool": "true or false",
    "str": "a string",
    "file": "a file path on the board",
    "name": "a name (1-64 ASCII letters, digits, '_' or '-')",
    "topic": "a topic level (no '/', '+' or '#')",
    "hex": "hex digits",
    "obj": "an object",
    "map": "an object",
    "list": "a list",
    "null": "null",
    "any": "anything",
}


def _span(alt):
    lo, hi = alt.split("..")
    return (int(lo) if lo else None, int(hi) if hi else None)


def _in_range(v, rng):
    """v (an int, or the length of a str / list) within the `|`-joined alternatives."""
    for alt in rng.split("|"):
        if ".." in alt:
            lo, hi = _span(alt)
            if (lo is None or v >= lo) and (hi is None or v <= hi):
                return True
        elif isinstance(v, int) and alt.lstrip("-").isdigit():
            if v == int(alt):
                return True
        elif v == alt:
            return True
    return False


def _alt(a):
    if a.startswith(".."):
        return "at most " + a[2:]
    if a.endswith(".."):
        return "at least " + a[:-2]
    return a


def _describe(types, rng):
    what = " or ".join([_WHAT[t] for t in types if t != "null"])
    tail = " (or null)" if "null" in types else ""
    if rng in ("-", "") or rng[0] in "$n" or rng == "name":
        return what + tail
    alts = " or ".join([_alt(a) for a in rng.split("|")])
    if ".." not in rng and "int" not in types:
        return "one of " + ", ".join(["'%s'" % a for a in rng.split("|")]) + tail
    if "int" in types and rng.replace("|", "").replace(".", "").replace("-", "").isdigit():
        return "%s %s%s" % (what, alts, tail)
    return "%s of length %s%s" % (what, alts, tail)


def _range_of(types, rng, v):
    """The part of a row's range that applies to value v (`0..255|$target`: int part)."""
    parts = [a for a in rng.split("|") if not a.startswith("$")]
    if isinstance(v, dict) or not parts or rng == "-":
        return "-"
    if isinstance(v, int) and not isinstance(v, bool):
        parts = [a for a in parts if a.replace(".", "").replace("-", "").isdigit()]
    else:
        parts = [a for a in parts if not a.replace(".", "").replace("-", "").isdigit()] or [
            a for a in parts if ".." in a
        ]
    return "|".join(parts) or "-"


def _group(rng):
    for a in rng.split("|"):
        if a.startswith("$"):
            return a
    return None


# --- the check --------------------------------------------------------------------------------
def _distance(a, b):
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
        prev = cur
    return prev[len(b)]


def nearest(word, names):
    """The name in names closest to word (edit distance), or None when none is close."""
    best = None
    bd = 0
    for n in names:
        d = _distance(word.lower(), n.lower())
        if best is None or d < bd:
            best = n
            bd = d
    if best is not None and bd <= max(2, len(word) // 3):
        return best
    return None


def _exact(path):
    """The first row whose path is exactly path (a list item `x[]`), or None."""
    for chunk in TABLE:
        i = chunk.find("\n" + path + " ")
        if i >= 0:
            return _parse(chunk[i + 1 : chunk.find("\n", i + 1)])
    return None


def _pick(rs, kind):
    for r in rs:
        if _applies(r, kind):
            return r
    return None


class _Checker:
    def __init__(self):
        self.problems = []
        self.cache = {}  # spath -> _kids(spath): list items share their parent's rows

    def kids(self, spath):
        k = self.cache.get(spath)
        if k is None:
            if len(self.cache) > 4:
                self.cache = {}
            k = self.cache[spath] = _kids(spath)
        return k

    def bad(self, key, msg):
        self.problems.append("config key '%s' %s" % (key, msg))

    def value(self, v, row, key, kind, fill):
        types = row[1]
        ok = None
        for t in types:
            if _is_type(v, t):
                ok = t
                break
        rng = row[3]
        if ok is None:
            self.bad(key, "must be %s, got %s" % (_describe(types, rng), _show(v)))
            return
        if ok == "any":
            return  # free-form (a unix sensor's `sim` script): its driver checks it
        if isinstance(v, dict):
            grp = _group(rng)
            if "map" in types and grp is None:
                self.mapping(v, row, key, kind, fill)
            else:
                self.obj(v, grp or row[0], key, kind, fill)
            return
        if isinstance(v, list):
            if rng != "-" and not _in_range(len(v), rng):
                self.bad(key, "must have %s items, got %d" % (rng.replace("|", " or "), len(v)))
            irow = _exact(row[0] + "[]")
            if irow is not None:
                for i in range(len(v)):
                    self.value(v[i], irow, "%s[%d]" % (key, i), kind, fill)
            return
        r = _range_of(types, rng, v)
        if r == "-" or v is None or isinstance(v, bool):
            return
        n = v if isinstance(v, int) or ".." not in r else len(v)
        if not _in_range(n, r):
            self.bad(key, "must be %s, got %s" % (_describe(types, r), _show(v)))

    def mapping(self, v, row, key, kind, fill):
        rng = row[3]
        sub = _pick(self.kids(row[0]).get("*", ()), kind)
        for k in v:
            if rng == "name" and not _is_name(k):
                self.bad(key, "has a bad name %s (1-64 letters, digits, '_' or '-')" % _show(k))
                continue
            if rng.startswith("n:"):
                try:
                    num = int(k)
                except ValueError:
                    num = None
                if num is None or not _in_range(num, rng[2:]):
                    self.bad(key + "." + k, "must be a number %s" % rng[2:])
                    continue
            elif ".." in rng and not _in_range(len(k), rng):
                self.bad(key + "." + k, "must be %s characters long" % rng)
                continue
            if sub is not None:
                self.value(v[k], sub, key + "." + k, kind, fill)
        if fill and row[2] not in ("-", "!"):
            dv = default_of(row)
            for k in dv:
                if k not in v:
                    v[k] = dv[k]

    def obj(self, v, spath, key, kind, fill):
        kids = self.kids(spath)
        trow = kids.get("type")
        if trow is not None and trow[0][4] is None and trow[0][2] == "!":
            # a required `type` (an input's) decides its other keys: check it first, alone if
            # it is bad (an optional `type`, a value layout's, is an ordinary key)
            trow = trow[0]
            kind = v.get("type")
            if kind is None or not _in_range(kind, trow[3]):
                got = "is missing"
                if kind is not None:
                    got = "must be %s, got %s" % (_describe(trow[1], trow[3]), _show(kind))
                self.bad(key + ".type", got)
                return
        pre = key + "." if key else ""
        for k in v:
            rs = kids.get(k)
            r = _pick(rs, kind) if rs else None
            if r is None:
                if rs:
                    self.bad(pre + k, "is not used by a %s input" % _show(kind))
                else:
                    self.unknown(pre, k, kids, kind)
                continue
            self.value(v[k], r, pre + k, kind, fill)
        for n in kids:
            if n in v:
                continue
            r = _pick(kids[n], kind)
            if r is None:
                continue
            if r[2] == "!":
                self.bad(pre + n, "is missing")
            elif fill and r[2] not in ("-", "null"):
                v[n] = default_of(r)
                self.value(v[n], r, pre + n, kind, fill)

    def unknown(self, pre, k, kids, kind):
        valid = [n for n in kids if _pick(kids[n], kind) is not None]
        near = nearest(k, valid)
        other = nearest(k, list(kids)) if near is None else None
        hint = ""
        if near or other:
            hint = "; did you mean '%s'?" % (pre + (near or other))
        if other:
            hint += " (a %s input has no such key)" % _show(kind)
        self.bad(pre + k, "is unknown" + hint)


def _show(v):
    try:
        s = json.dumps(v)
    except (TypeError, ValueError):
        s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def _target_ch(t):
    if isinstance(t, dict):
        return t.get("ch")
    return t


def _add(out, key, t):
    if isinstance(t, list):  # several targets of one DP / register
        for j in range(len(t)):
            out.append(("%s[%d]" % (key, j), t[j]))
    else:
        out.append((key, t))


def _targets(spec):
    """(key suffix, target) of every channel an input writes."""
    out = []  # type: list
    for m in ("keys", "dps", "fields", "columns", "groups"):
        d = spec.get(m)
        if isinstance(d, dict):
            for k in d:
                _add(out, "%s.%s" % (m, k), d[k])
    reads = spec.get("reads")
    if isinstance(reads, list):
        for i in range(len(reads)):
            d = reads[i].get("map") if isinstance(reads[i], dict) else None
            if isinstance(d, dict):
                for k in d:
                    _add(out, "reads[%d].map.%s" % (i, k), d[k])
    ch = spec.get("channels")
    if isinstance(ch, dict):
        for k in ch:
            out.append(("channels." + k, ch[k]))
    return out


_WORDS = {"u32": 2, "i32": 2, "f32": 2, "u64": 4, "i64": 4, "f64": 4}


def _modbus_windows(c, spec, key):
    reads = spec.get("reads")
    if not isinstance(reads, list):
        return
    for i in range(len(reads)):
        rd = reads[i]
        if not isinstance(rd, dict) or not isinstance(rd.get("map"), dict):
            continue
        addr = rd.get("addr", 0)
        count = rd.get("count", 1)
        for k in rd["map"]:
            ts = rd["map"][k] if isinstance(rd["map"][k], list) else [rd["map"][k]]
            words = 1
            for t in ts:
                typ = t.get("type") if isinstance(t, dict) else None
                words = max(words, _WORDS.get(str(typ), 1))
            try:
                reg = int(k)
            except ValueError:
                continue
            if isinstance(addr, int) and isinstance(count, int):
                if reg < addr or reg + words > addr + count:
                    c.bad(
                        "%s.reads[%d].map.%s" % (key, i, k),
                        "is outside the read (registers %d..%d)" % (addr, addr + count - 1),
                    )


def _cross(c, cfg, board):
    """Rules between keys: declared categories and channels, modbus windows, board names."""
    cats = cfg.get("categories")
    if isinstance(cats, dict):
        if "essential" not in cats:
            c.bad("categories", "must declare 'essential'")
        if len(cats) > _MAX_CATEGORIES:
            c.bad("categories", "declares more than %d categories" % _MAX_CATEGORIES)
    else:
        cats = {}
    chans = cfg.get("channels")
    ids = {}
    if isinstance(chans, list):
        for i in range(len(chans)):
            ch = chans[i]
            if not isinstance(ch, dict):
                continue
            cid = ch.get("id")
            if cid in ids:
                c.bad("channels[%d].id" % i, "repeats channel id %s" % _show(cid))
            ids[cid] = ch.get("category")
            if "category" in ch and ch["category"] not in cats:
                c.bad(
                    "channels[%d].category" % i,
                    "names undeclared category %s" % _show(ch["category"]),
                )
    for name in cats:
        pol = cats[name]
        rules = pol.get("minimise") if isinstance(pol, dict) else None
        if not isinstance(rules, list):
            continue
        for i in range(len(rules)):
            r = rules[i]
            if not isinstance(r, dict):
                continue
            key = "categories.%s.minimise[%d]" % (name, i)
            if r.get("op") == "coarsen" and "step" not in r:
                c.bad(key + ".step", "is missing (coarsen needs it)")
            if r.get("op") == "pseudonymise" and r.get("field") == "ts":
                c.bad(key + ".field", "must be 'value' to pseudonymise")
            for ch in r.get("channels") or ():
                if ids.get(ch, None) != name:
                    c.bad(key + ".channels", "lists %s, not a channel of %s" % (_show(ch), name))
    inputs = cfg.get("inputs")
    if not isinstance(inputs, list):
        return
    for i in range(len(inputs)):
        spec = inputs[i]
        if not isinstance(spec, dict):
            continue
        key = "inputs[%d]" % i
        for suffix, t in _targets(spec):
            ch = _target_ch(t)
            if isinstance(ch, int) and not isinstance(ch, bool) and ch not in ids:
                c.bad(key + "." + suffix, "writes channel %d, not declared in 'channels'" % ch)
        if spec.get("type") == "modbus":
            _modbus_windows(c, spec, key)
        if board is not None:
            _board_names(c, spec, key, board)


def _board_names(c, spec, key, board):
    from edge import board as boards

    typ = spec.get("type")
    try:
        if typ in ("line", "tuya", "modbus") and "uart" in spec:
            u = boards.resolve(board, "uarts", spec["uart"], key + ".uart")
            if board.get("chip") == "unix":
                if not u.get("path"):
                    c.bad(key + ".uart", "has no 'path' (a unix board reads a pty or tty)")
            else:
                for k in ("id", "tx", "rx"):
                    if k not in u:
                        c.bad(key + ".uart", "has no %r (the board file does not give it)" % k)
        if typ == "sht3x":
            boards.resolve(board, "i2c", spec.get("i2c"), key + ".i2c")
        pin = spec.get("pin")
        if isinstance(pin, str) and pin not in (board.get("pins") or {}):
            names = list(board.get("pins") or {})
            near = nearest(pin, names)
            c.bad(
                key + ".pin",
                "names pin %s, not in the board's pins (%s)%s"
                % (_show(pin), ", ".join(names), "; did you mean %r?" % near if near else ""),
            )
    except ValueError as e:
        c.problems.append(str(e))


def check(cfg, board=None, fill=True):
    """Every problem of cfg as a list of `config key 'PATH' ...` lines (empty: valid). With
    fill, absent keys that have defaults are filled in place. With a board dict (the effective
    board: file plus overrides), UART, I2C and pin names are resolved against it."""
    if not isinstance(cfg, dict):
        return ["config must be a JSON object"]
    c = _Checker()
    c.obj(cfg, "", "", None, fill)
    _cross(c, cfg, board)
    return c.problems


def defaults():
    """The complete default config (the embedded simulated fridge)."""
    cfg = {}  # type: dict
    check(cfg)
    return cfg
