"""Interleaved search latency A/B at 100k: segmented store (one IVF segment + 4 document segments) against the
one-file store on the same index and queries, 10 passes of 200 queries each, alternating stores (and which goes first) per pass; reports wall and CPU time.

    .venv/bin/python bench/index_growth_ab.py
"""
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from index_growth import corpus, DIM, DOC
from baseline_index_store import IndexStore as B
from ragsvc.index_store import IndexStore as S
n = 100_000
xb, extra = corpus(n, 200); q = extra[:200]; docs = extra[200:]
tmp = Path(tempfile.mkdtemp())
w = S(tmp/"seg", DIM, kind="ivf", ivf_min_vectors=100_000, nprobe=192)
w.rebuild("c", np.arange(n), xb)
for d in range(4): w.add("c", list(range(n+d*DOC, n+(d+1)*DOC)), docs[d*DOC:(d+1)*DOC])
big = max((tmp/"seg"/"c").glob("seg-*.faiss"), key=lambda p: p.stat().st_size)
(tmp/"base"/"c").mkdir(parents=True); shutil.copy(big, tmp/"base"/"c"/"index.faiss")
r = S(tmp/"seg", DIM, kind="ivf", nprobe=192); b = B(tmp/"base", DIM, kind="ivf", nprobe=192)
r.search("c", q[0], 10); b.search("c", q[0], 10)
# Wall time, and this thread's CPU time: on cores shared with other work, a query's wall time includes
# waiting for a core; its CPU time is the work the store itself did, which is what the A/B compares.
names = ("segmented (1 IVF + 4 doc segments)", "one-file baseline")
lat = {k: [] for k in names}
cpu = {k: [] for k in names}
for p in range(10):  # ten passes, the order of the two stores swapped each pass
    for name, st in list(zip(names, (r, b)))[::1 if p % 2 == 0 else -1]:
        for v in q:
            t0, c0 = time.perf_counter(), time.thread_time()
            st.search("c", v, 10)
            cpu[name].append((time.thread_time() - c0) * 1000); lat[name].append((time.perf_counter() - t0) * 1000)
pct = lambda v, f: round(sorted(v)[min(len(v) - 1, int(len(v) * f))], 3)
for k in names:
    print(json.dumps({"store": k, "n": n, "queries": len(lat[k]), "p50_ms": pct(lat[k], .5), "p99_ms": pct(lat[k], .99),
                      "cpu_p50_ms": pct(cpu[k], .5), "cpu_p99_ms": pct(cpu[k], .99),
                      "cpu_mean_ms": round(sum(cpu[k]) / len(cpu[k]), 3)}))
shutil.rmtree(tmp)
