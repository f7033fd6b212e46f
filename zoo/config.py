"""Dataset presets and the per-model default config that travels with a model.

Kept free of torch so the model card (and the device side) can use it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum


class Dataset(str, Enum):
    IMAGENET = "imagenet"
    CIFAR10 = "cifar10"


CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)

# Channel statistics of the training sets (ImageNet: the torchvision values;
# CIFAR-10: computed over the 50k training images).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class DataConfig:
    """How a model expects its input: the 'default config' of timm's models.

    Preprocessing is: resize the short side to `resize`, centre-crop
    `input_size`, scale to [0, 1], subtract `mean`, divide by `std`, NCHW.
    """

    dataset: str
    input_size: int
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: int
    interpolation: str = "bilinear"
    class_names: tuple[str, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["class_names"] = list(self.class_names)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DataConfig":
        return cls(
            dataset=str(d["dataset"]),
            input_size=int(d["input_size"]),
            num_classes=int(d["num_classes"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            resize=int(d["resize"]),
            interpolation=str(d.get("interpolation", "bilinear")),
            class_names=tuple(str(c) for c in d.get("class_names", ())),
        )


def default_data_config(dataset: Dataset | str, input_size: int | None = None,
                        num_classes: int | None = None) -> DataConfig:
    dataset = Dataset(dataset)
    if dataset is Dataset.CIFAR10:
        size = input_size or 32
        n = num_classes or 10
        names = CIFAR10_CLASSES if n == 10 else ()
        return DataConfig("cifar10", size, n, CIFAR10_MEAN, CIFAR10_STD, resize=size,
                          class_names=names)
    size = input_size or 224
    n = num_classes or 1000
    names = imagenet_synsets() if n == 1000 else ()
    # The usual 0.875 centre-crop ratio (256 -> 224).
    return DataConfig("imagenet", size, n, IMAGENET_MEAN, IMAGENET_STD,
                      resize=int(round(size / 0.875)), class_names=names)


def imagenet_synsets() -> tuple[str, ...]:
    """The 1000 ILSVRC-2012 synset ids in class-index order (sorted)."""
    from importlib import resources

    text = resources.files("zoo").joinpath("imagenet_synsets.txt").read_text()
    return tuple(line.strip() for line in text.splitlines() if line.strip())
