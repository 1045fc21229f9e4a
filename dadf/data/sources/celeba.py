"""CelebA from torchvision's layout: `<root>/celeba/img_align_celeba/*.jpg` (178×218 aligned faces),
`list_attr_celeba.txt` (40 binary attributes per image, as -1/1) and `list_eval_partition.txt` (0 train, 1 valid,
2 test -> parts "train", "val", "test"). PIAD crops the central 140×140 and downscales to 64×64. The attributes ride
beside the class (one class, "face") as `Source.attributes`; the `attribute` protocol splits on one of them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ..types import IMAGE, Source
from . import register
from .attributes import declare_attributes
from .files import DataError, absent, missing_files_error, reading

ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip
CLASSES = ("face",)
_PARTITIONS = {"0": "train", "1": "val", "2": "test"}
declare_attributes("celeba", ATTRIBUTES)


def _read_attributes(path: Path) -> tuple[list[str], np.ndarray]:
    """(file names, uint8 0/1 matrix) of list_attr_celeba.txt: a count line, the 40 names, then one row per image."""
    with reading(path):
        lines = path.read_text().split("\n")
        names = lines[1].split()
        if tuple(names) != ATTRIBUTES:
            raise DataError(f"{path}: its header names {len(names)} attributes, not CelebA's 40 "
                            f"({', '.join(ATTRIBUTES[:3])}, ...); this is not list_attr_celeba.txt")
        rows = [line.split() for line in lines[2:] if line.strip()]
        if int(lines[0]) != len(rows) or any(len(r) != len(ATTRIBUTES) + 1 for r in rows):
            raise ValueError(f"{lines[0].strip()} images announced, {len(rows)} rows read, each must hold a file "
                             f"name and {len(ATTRIBUTES)} values")
        values = np.array([r[1:] for r in rows], dtype=np.int8)
        if not np.isin(values, (-1, 1)).all():
            raise ValueError("attribute values must be -1 or 1")
    return [r[0] for r in rows], (values == 1).astype(np.uint8)


def _read_partition(path: Path) -> dict[str, str]:
    with reading(path):
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        bad = [r for r in rows if len(r) != 2 or r[1] not in _PARTITIONS]
        if bad:
            raise ValueError(f"row {' '.join(bad[0])!r}: each row must be '<file> 0|1|2'")
    return {name: _PARTITIONS[p] for name, p in rows}


def crop_and_resize(path: Path, crop: int, resolution: int) -> np.ndarray:
    """The central crop×crop square, downscaled to resolution×resolution (bilinear, antialiased): uint8 (3, r, r)."""
    with reading(path):
        image = Image.open(path)
        image.load()
    w, h = image.size
    if min(w, h) < crop:
        raise DataError(f"{path} is {w}×{h}, smaller than the {crop}×{crop} crop; set dataset.params.crop lower")
    left, top = round((w - crop) / 2), round((h - crop) / 2)
    square = image.convert("RGB").crop((left, top, left + crop, top + crop))
    return np.asarray(square.resize((resolution, resolution), Image.Resampling.BILINEAR)).transpose(2, 0, 1)


@register("celeba", classes=CLASSES, parts=("train", "val", "test"))
def load_celeba(root: Path, download: bool, *, crop: int = 140, resolution: int = 64) -> Source:
    folder = root / "celeba"
    attr_file, partition_file = folder / "list_attr_celeba.txt", folder / "list_eval_partition.txt"
    images = folder / "img_align_celeba"
    missing = absent([images, attr_file, partition_file])
    if missing:
        raise missing_files_error("celeba", folder, missing, downloadable=False)
    names, attributes = _read_attributes(attr_file)
    partition = _read_partition(partition_file)
    missing = absent([images / n for n in names])
    unassigned = [n for n in names if n not in partition]
    if missing:
        raise missing_files_error("celeba", images, missing[:20], downloadable=False)
    if unassigned:
        raise DataError(f"celeba: {len(unassigned)} images of {attr_file} have no row in {partition_file} "
                        f"(first: {unassigned[0]}); copy intact copies of both files there")
    parts, part_attributes = {}, {}
    for part in _PARTITIONS.values():
        rows = [i for i, n in enumerate(names) if partition[n] == part]
        x = np.stack([crop_and_resize(images / names[i], crop, resolution) for i in rows]) if rows \
            else np.empty((0, 3, resolution, resolution), np.uint8)
        parts[part] = (x, np.zeros(len(rows), dtype=np.int64))
        part_attributes[part] = attributes[rows]
    meta = {"crop": crop, "resolution": resolution}
    return Source("celeba", IMAGE, parts, CLASSES, meta, attribute_names=ATTRIBUTES, attributes=part_attributes)
