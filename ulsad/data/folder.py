"""A generic folder dataset, for your own images.

Layout of one category (``<root>/<category>/``, or ``<root>`` itself when no category is given)::

    good/                       training images, all defect-free (required)
    test/good/                  defect-free test images (optional)
    test/<defect>/              defective test images, one folder per defect type (optional)
    masks/<defect>/<name>.png   ground truth of test/<defect>/<name>.* (optional; <name>_mask.png
                                also accepted; any value > 0 is defect)

Without ``test/`` the test split is empty. Without ``masks/`` defective images have no masks (one
warning: image-level metrics only); with ``masks/``, every defective image needs its mask.
There is no validation split: the trainer holds out part of ``good/`` itself.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from ulsad.data.samples import Sample, index_by_stem, list_images, subfolders
from ulsad.errors import ULSADError


def is_category(path: Path) -> bool:
    """A folder-dataset category holds ``good/``."""
    return (path / "good").is_dir()


def load(root: Path, category: str, split: str) -> list[Sample]:
    """Samples of ``split`` for ``root/category``."""
    cat_dir = root / category
    if split == "train":
        return [Sample(p, 0, "good") for p in list_images(cat_dir / "good")]
    if split != "test":
        return []
    mask_root = cat_dir / "masks"
    samples: list[Sample] = []
    for folder in subfolders(cat_dir / "test"):
        if folder.name == "good":
            samples += [Sample(p, 0, "good") for p in list_images(folder)]
            continue
        masks = index_by_stem(mask_root / folder.name)
        for image in list_images(folder):
            mask_paths: tuple[Path, ...] = ()
            if mask_root.is_dir():
                mask = masks.get(image.stem) or masks.get(f"{image.stem}_mask")
                if mask is None:
                    raise ULSADError(
                        f"defective image {image} has no mask: expected "
                        f"{mask_root / folder.name / (image.stem + '.png')}; add it or remove "
                        "the masks/ folder to evaluate image-level only."
                    )
                mask_paths = (mask,)
            samples.append(Sample(image, 1, folder.name, mask_paths))
    if any(s.label for s in samples) and not mask_root.is_dir():
        warnings.warn(
            f"{cat_dir} has no masks/ folder: defective images have no masks, so only "
            "image-level metrics can be computed.",
            stacklevel=3,
        )
    return sorted(samples, key=lambda s: s.path)
