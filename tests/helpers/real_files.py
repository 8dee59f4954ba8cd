"""Tiny dataset files in the real on-disk formats (CIFAR python batches, idx), for tests."""
import gzip
import pickle
import struct

import numpy as np


def images(seed, n, shape=(32, 32, 3)):
  return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def write_cifar_py(path, x, labels, label_key=b"labels", extra=None):
  batch = {b"batch_label": b"fixture", label_key: [int(v) for v in labels],
           b"data": x.transpose(0, 3, 1, 2).reshape(len(x), 3072),
           b"filenames": [b"img%d.png" % i for i in range(len(x))], **(extra or {})}
  with open(path, "wb") as f:
    pickle.dump(batch, f, protocol=2)


def write_idx(folder, x_tr, y_tr, x_te, y_te, gz):
  folder.mkdir(parents=True, exist_ok=True)
  for prefix, x, y in (("train", x_tr, y_tr), ("t10k", x_te, y_te)):
    for name, arr in ((f"{prefix}-images-idx3-ubyte", x), (f"{prefix}-labels-idx1-ubyte", y)):
      data = struct.pack(f">I{arr.ndim}I", 0x800 + arr.ndim, *arr.shape)
      data += arr.astype(np.uint8).tobytes()
      if gz:
        (folder / (name + ".gz")).write_bytes(gzip.compress(data))
      else:
        (folder / name).write_bytes(data)
