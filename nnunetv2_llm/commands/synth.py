"""``nnunetv2-llm synth``: a small synthetic dataset in nnU-Net raw format (for tests, demos and benchmarks)."""
from __future__ import annotations

import os

from ..nnunet.synthetic import TASKS


def cmd_synth(args) -> int:
    from ..nnunet.synthetic import Shift, SyntheticError, make_dataset
    raw = args.raw or os.environ.get("nnUNet_raw")
    if not raw:
        raise SyntheticError("nnUNet_raw is not set; export it or pass --raw FOLDER.")
    shift = Shift(contrast=args.contrast, noise=args.noise, scale=args.intensity_scale)
    folder = make_dataset(raw, args.dataset_id, dim=args.dim, num_train=args.num_train, num_test=args.num_test,
                          size=args.size, seed=args.seed, shift=shift, task=args.task,
                          other_roots=[os.environ[v] for v in ("nnUNet_preprocessed", "nnUNet_results")
                                       if os.environ.get(v)])
    print(folder)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth", help="write a small synthetic dataset in nnU-Net raw format",
        description="Write DatasetXXX_Synth2D / _Synth3D into nnUNet_raw: grayscale PNG images (2D) or NIfTI volumes "
                    "(3D) of textured objects on a textured, noisy background (intensity alone does not segment "
                    "them), with imagesTr/labelsTr for training and imagesTs/labelsTs held out. The same --seed with "
                    "a domain shift gives the same shapes and labels looking different: a zero-shot test set.")
    p.add_argument("-d", "--dataset-id", type=int, default=501, help="dataset id (default 501)")
    p.add_argument("--dim", type=int, choices=[2, 3], default=2, help="2 (PNG) or 3 (NIfTI); default 2")
    p.add_argument("--num-train", type=int, default=20, help="training cases (default 20; 5-fold CV needs >= 5)")
    p.add_argument("--num-test", type=int, default=4, help="held-out cases in imagesTs/labelsTs (default 4)")
    p.add_argument("--size", type=int, help="edge length in pixels/voxels (default 64 in 2D, 32 in 3D)")
    p.add_argument("--seed", type=int, default=0, help="seed of shapes and textures (default 0)")
    p.add_argument("--raw", help="nnUNet_raw folder (default: $nnUNet_raw)")
    p.add_argument("--task", default="blobs", choices=list(TASKS),
                   help="blobs: the label follows local texture; context: identical objects whose class (a or b) is "
                        "set by a small cue far away in the image (default blobs)")
    shift = p.add_argument_group("domain shift", "change the cases' appearance, not their shapes or labels: the "
                                                 "same --seed with a shift is a zero-shot test set")
    shift.add_argument("--contrast", type=float, default=1.0, help="scale deviations from the image mean (default 1)")
    shift.add_argument("--noise", type=float, default=0.0, help="add Gaussian noise of this std (default 0)")
    shift.add_argument("--intensity-scale", type=float, default=1.0, help="multiply intensities (default 1)")
    p.set_defaults(func=cmd_synth)
