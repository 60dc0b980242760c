# Release key rotation through the boot state (edge/ota/slots.py, docs/OTA.md 3): a rotation
# rides on a trial and is adopted only when that trial is confirmed; a rollback keeps the old
# key; a deploy of another key over the serial port wins over a rotation. Usage:
#   micropython ota_keys.py ROOT OLD_PUB_HEX NEW_PUB_HEX DEPLOYED_LATER_PUB_HEX
# Prints the key id trusted after each step as JSON.
import binascii
import json
import sys

from edge.ota import boot, slots

root = sys.argv[1]
old, new, later = (binascii.unhexlify(h) for h in sys.argv[2:5])
rotation = {"pub": sys.argv[3], "id": slots.key_id(new), "from": slots.key_id(old)}


def trusted(deployed):
    return slots.key_id(slots.trusted_key(boot.read_state(root), deployed))


def trial(n):
    st = boot.read_state(root)
    slots.stage(root, st, "update", "b", st["cfg"], n, "1.2.0", next_key=rotation)
    boot.select(root, boot.read_state(root))  # the trial boot
    return trusted(old)


out = {"old": slots.key_id(old), "new": slots.key_id(new), "later": slots.key_id(later)}
out["during_trial"] = trial(1)
boot.select(root, boot.read_state(root))  # reset before confirmation: rollback
out["after_rollback"] = trusted(old)
trial(2)
slots.confirm(root, boot.read_state(root))
out["after_confirm"] = trusted(old)
out["after_redeploy"] = trusted(later)
print(json.dumps(out))
