"""Interleaved search latency A/B at 100k: segmented store (one IVF segment + 4 document segments) against the
one-file store on the same index and queries, 5 passes of 200 queries each, alternating stores per pass.

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
lat = {"segmented (1 IVF + 4 doc segments)": [], "one-file baseline": []}
for p in range(5):
    for name, st in (("segmented (1 IVF + 4 doc segments)", r), ("one-file baseline", b)):
        for v in q:
            t0 = time.perf_counter(); st.search("c", v, 10); lat[name].append((time.perf_counter()-t0)*1000)
for k, v in lat.items():
    v.sort(); print(json.dumps({"store": k, "n": n, "queries": len(v), "p50_ms": round(v[len(v)//2], 2), "p99_ms": round(v[int(len(v)*.99)-1], 2)}))
shutil.rmtree(tmp)
