"""Writes the CIFAR pickle fixtures of tests/data_sources.rs with real Python and numpy.

Run from this directory with the project's virtual environment:
    ../../../../../.venv/bin/python make_fixtures.py

Each batch holds 3 images whose pixel (i, j) of `data` (N x 3072, planar R, G, B) is
(i * 101 + j * 7 + 3) % 256. Three encodings of the same CIFAR-10 batch:
  - c10_batch_py2.pkl: the structure of Python 2 cPickle protocol 2, as in the official files
    (byte strings as SHORT_BINSTRING / BINSTRING, numpy.core.multiarray._reconstruct);
  - c10_batch_py3_p2.pkl: Python 3 pickle protocol 2 (bytes through _codecs.encode);
  - c10_batch_py3_p4.pkl: Python 3 pickle protocol 4 (FRAME, MEMOIZE, STACK_GLOBAL, BINBYTES).
and, in the Python 2 structure, a CIFAR-10 meta, a CIFAR-100 batch and a CIFAR-100 meta.
"""
import pickle
import struct

import numpy as np


class Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 cPickle wrote it: byte strings (Python 2 `str`) and ASCII text
    as BINSTRING, numpy globals under numpy.core."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        if isinstance(obj, str):
            obj = obj.encode("ascii")
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str

    def save_global(self, obj, name=None):
        module = pickle.whichmodule(obj, obj.__qualname__).replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{obj.__qualname__}\n".encode("ascii"))
        self.memoize(obj)


def data(n):
    i = np.arange(n).reshape(n, 1)
    j = np.arange(3072).reshape(1, 3072)
    return ((i * 101 + j * 7 + 3) % 256).astype(np.uint8)


def py2_dump(obj, path):
    with open(path, "wb") as f:
        Py2Pickler(f, protocol=2).dump(obj)


c10 = {
    b"batch_label": b"training batch 1 of 5",
    b"labels": [6, 9, 3],
    b"data": data(3),
    b"filenames": [b"leptodactylus_pentadactylus_s_000004.png", b"camion_s_000148.png", b"tipper_truck_s_001250.png"],
}
py2_dump(c10, "c10_batch_py2.pkl")
for protocol in (2, 4):
    with open(f"c10_batch_py3_p{protocol}.pkl", "wb") as f:
        pickle.dump(c10, f, protocol=protocol)

names10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
py2_dump({b"num_cases_per_batch": 10000, b"label_names": [n.encode() for n in names10], b"num_vis": 3072}, "c10_meta_py2.pkl")

py2_dump(
    {
        b"filenames": [b"bos_taurus_s_000507.png", b"stegosaurus_s_000125.png", b"mcintosh_s_000643.png"],
        b"batch_label": b"training batch 1 of 1",
        b"fine_labels": [19, 29, 0],
        b"coarse_labels": [11, 15, 4],
        b"data": data(3),
    },
    "c100_train_py2.pkl",
)
py2_dump(
    {b"fine_label_names": [f"fine_{i:02}".encode() for i in range(100)], b"coarse_label_names": [f"coarse_{i:02}".encode() for i in range(20)]},
    "c100_meta_py2.pkl",
)
