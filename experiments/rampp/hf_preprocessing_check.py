"""RFR's DINOv2 input (``RFR.dino_pixels``) against Hugging Face's own image processor, as the reference
calls it (RAMPP_SPEC §e: de-normalise, reflect-pad to 16, ``size={"shortest_edge": min(target)}``,
``do_rescale=False``, ``do_center_crop=False``, the fast processor), with DINOv2's processor settings
(bicubic, ImageNet mean and std; the giant checkpoint's own preprocessor_config.json could not be read
here, no route to the hub).

The HF processor needs torchvision, which ramir does not install (it drags a CUDA build). Run this in a
throwaway environment: ``pip install --no-deps --target /tmp/tvlib torchvision==0.28.0`` and
``PYTHONPATH=/tmp/tvlib python experiments/rampp/hf_preprocessing_check.py``. The PyPI wheel's compiled
operators need CUDA libraries, so their fake-tensor registrations are skipped below; the processor's
resize and normalisation are plain torch calls and do not use them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.library

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

_register_fake = torch.library.register_fake


def _skip_torchvision_ops(op, *args, **kwargs):
    if isinstance(op, str) and op.startswith("torchvision::"):
        return lambda fn: fn
    return _register_fake(op, *args, **kwargs)


def main() -> int:
    torch.library.register_fake = _skip_torchvision_ops
    import torchvision
    from transformers import BitImageProcessor, __version__
    from transformers.image_utils import PILImageResampling

    from ramir import create_model
    from ramir.archs.rfr import IMAGENET_MEAN, IMAGENET_STD, PAD_MULTIPLE, _reflect_pad_to_multiple

    net = create_model("ram-rfr-dinos")
    processor = BitImageProcessor(resample=PILImageResampling.BICUBIC, image_mean=list(IMAGENET_MEAN),
                                  image_std=list(IMAGENET_STD))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    print(f"transformers {__version__}, torchvision {torchvision.__version__}, {type(processor).__name__}")
    worst = 0.0
    torch.manual_seed(0)
    for h, w in [(128, 128), (64, 96), (200, 136), (321, 481), (481, 321), (256, 1000)]:
        x = (torch.rand(1, 3, h, w) - mean) / std
        ours = net.dino_pixels(x, 14)
        padded = _reflect_pad_to_multiple(x, PAD_MULTIPLE) * std + mean
        target = (padded.shape[-2] // 8 * 14, padded.shape[-1] // 8 * 14)
        ref = processor(padded, size={"shortest_edge": min(target)}, do_rescale=False,
                        do_center_crop=False, return_tensors="pt")["pixel_values"]
        if ref.shape != ours.shape:
            print(f"{h}x{w}: shapes differ, HF {tuple(ref.shape)} vs ramir {tuple(ours.shape)}")
            return 1
        err = float((ref - ours).abs().max())
        worst = max(worst, err)
        print(f"{h}x{w}: {tuple(ours.shape[-2:])}, max |HF - ramir| = {err:.3g}")
    print(f"worst {worst:.3g}")
    return 0 if worst < 1e-5 else 1


if __name__ == "__main__":
    sys.exit(main())
