"""Datasets: loaders for the benchmark layouts and synthetic datasets for tests and demos."""

from ulsad.data.datasets import DATASETS, DatasetSpec, get_dataset, list_categories, load_split
from ulsad.data.samples import IMAGE_EXTENSIONS, SPLITS, Sample, load_mask
from ulsad.data.synthetic import make_layout_dataset, make_synthetic_dataset
from ulsad.data.training import category_layout, training_images

__all__ = [
    "DATASETS",
    "IMAGE_EXTENSIONS",
    "SPLITS",
    "DatasetSpec",
    "Sample",
    "category_layout",
    "get_dataset",
    "list_categories",
    "load_mask",
    "load_split",
    "make_layout_dataset",
    "make_synthetic_dataset",
    "training_images",
]
