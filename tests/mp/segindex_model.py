# The store's segment index (edge/store/segindex.py) against a list of lists, over random
# appends, deletions of the oldest and field updates; prints the heap one entry costs.
import gc
import json
import random

from edge.store.segindex import SegIndex

random.seed(7)
idx = SegIndex()
model = []
segno = 1
for step in range(20000):
    r = random.getrandbits(8)
    if r < 140 or not model:
        first = -1 if r & 1 else segno << 33  # 48-bit seqs (epoch in the high bits)
        size = random.getrandbits(20)
        ok = bool(r & 2)
        idx.append(segno, first, -1, size, ok)
        model.append([segno, first, -1, size, ok])
        segno += 1 + (r & 4)  # numbers may have gaps (a bad file removed at boot)
    elif r < 230:
        idx.pop_oldest()
        model.pop(0)
    elif r < 245:
        i = random.getrandbits(16) % len(model)
        idx.set_last(i, step << 20)
        idx.set_first(i, step)
        idx.grow(i, 36)
        model[i][2] = step << 20
        model[i][1] = step
        model[i][3] += 36
    else:
        while model:
            idx.pop_oldest()
            model.pop(0)
    assert len(idx) == len(model)
    for i, m in enumerate(model):
        got = [idx.segno(i), idx.first(i), idx.last(i), idx.size(i), idx.readable(i)]
        assert got == m, (step, i, got, m)
    probe = model[len(model) // 2][0] if model else 5
    want = len(model)
    for i, m in enumerate(model):
        if m[0] >= probe:
            want = i
            break
    assert idx.find(probe) == want

gc.collect()
a = gc.mem_alloc()
big = SegIndex()
for i in range(256):
    big.append(i, i, i, 4096, True)
gc.collect()
per_entry = (gc.mem_alloc() - a) / 256
gc.collect()
a = gc.mem_alloc()
lists = [[i, i, i, 4096, True] for i in range(256)]
gc.collect()
per_list = (gc.mem_alloc() - a) / 256
print(json.dumps({"steps": 20000, "entry_bytes": per_entry, "list_entry_bytes": per_list}))
