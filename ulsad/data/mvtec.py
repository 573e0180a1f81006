"""Loaders for the MVTec-AD-style per-category layouts: MVTec AD, MPDD and BTAD.

All three ship one folder per category::

    <root>/<category>/train/<good>/*            defect-free training images
    <root>/<category>/test/<good>/*             defect-free test images
    <root>/<category>/test/<defect>/*           defective test images, one folder per defect type
    <root>/<category>/ground_truth/<defect>/<stem><suffix>.<ext>   one mask per defective image

MVTec AD (https://www.mvtec.com/research-teaching/datasets/mvtec-ad, CC BY-NC-SA 4.0; cite
Bergmann et al., CVPR 2019 / IJCV 2021): 15 categories, ``<good>`` = ``good``, masks
``<stem>_mask.png`` (0/255). Downloading requires accepting the licence on that page.

MPDD (https://github.com/stepanje/MPDD, files on the authors' OneDrive; cite Jezek et al., ICUMT
2021; CC BY-NC-SA 4.0): 6 categories, same layout as MVTec AD.

BTAD (https://avires.dimi.uniud.it/papers/btad/btad.zip, project github.com/pankajmishra000/VT-ADL;
CC BY-SA 4.0 per that project, CC BY-NC-SA 4.0 per anomalib; cite Mishra et al., ISIE 2021):
categories ``01``, ``02``, ``03``; ``<good>`` = ``ok``, one defect folder ``ko``; images are .png or
.bmp and masks share the image's stem (``.png`` for 01/02, ``.bmp`` for 03). The zip extracts to
``BTech_Dataset_transformed/<category>/``. (Layouts as read by anomalib's ``mvtecad``/``mpdd``/
``btech`` modules and the BTAD loaders published with other methods.)

A copy with no ``ground_truth`` folder at all (e.g. a masks-less MVTec AD mirror) loads with empty
``mask_paths`` and one warning: only image-level metrics are possible then.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from ulsad.data.samples import Sample, index_by_stem, list_images, subfolders
from ulsad.errors import ULSADError

MVTEC_AD_CATEGORIES = (
    "bottle",
    "cable",
    "capsule",
    "carpet",
    "grid",
    "hazelnut",
    "leather",
    "metal_nut",
    "pill",
    "screw",
    "tile",
    "toothbrush",
    "transistor",
    "wood",
    "zipper",
)
MPDD_CATEGORIES = (
    "bracket_black",
    "bracket_brown",
    "bracket_white",
    "connector",
    "metal_plate",
    "tubes",
)
BTAD_CATEGORIES = ("01", "02", "03")


@dataclass(frozen=True)
class CategoryLayout:
    """How one MVTec-like dataset names its good folder and its masks."""

    title: str
    good: str = "good"
    mask_suffix: str = "_mask"

    def is_category(self, path: Path) -> bool:
        """A category folder holds ``train/<good>``."""
        return (path / "train" / self.good).is_dir()

    def load(self, root: Path, category: str, split: str) -> list[Sample]:
        """Samples of ``split`` for ``root/category``; datasets without ``validation`` give []."""
        cat_dir = root / category
        if split == "train":
            return [Sample(p, 0, "good") for p in list_images(cat_dir / "train" / self.good)]
        if split != "test":
            return []
        test_dirs = subfolders(cat_dir / "test")
        if not test_dirs:
            raise ULSADError(
                f"{cat_dir / 'test'} has no image folders; the {self.title} layout needs "
                f"test/{self.good}/ and test/<defect>/ under {cat_dir}."
            )
        gt_root = cat_dir / "ground_truth"
        has_gt = gt_root.is_dir()
        samples: list[Sample] = []
        for folder in test_dirs:
            if folder.name == self.good:
                samples += [Sample(p, 0, "good") for p in list_images(folder)]
                continue
            masks = index_by_stem(gt_root / folder.name) if has_gt else {}
            for image in list_images(folder):
                mask_paths: tuple[Path, ...] = ()
                if has_gt:
                    mask = masks.get(image.stem + self.mask_suffix) or masks.get(image.stem)
                    if mask is None:
                        expected = gt_root / folder.name / f"{image.stem}{self.mask_suffix}.png"
                        raise ULSADError(
                            f"defective image {image} has no mask: expected {expected}; restore "
                            "it or remove the image."
                        )
                    mask_paths = (mask,)
                samples.append(Sample(image, 1, folder.name, mask_paths))
        if not has_gt and any(s.label for s in samples):
            warnings.warn(
                f"{self.title} copy at {cat_dir} has no ground_truth folder: defective images "
                "have no masks, so only image-level metrics can be computed.",
                stacklevel=3,
            )
        return sorted(samples, key=lambda s: s.path)


MVTEC_AD = CategoryLayout("MVTec AD")
MPDD = CategoryLayout("MPDD")
BTAD = CategoryLayout("BTAD", good="ok", mask_suffix="")
