"""A folder of PNG images, one subfolder per class label (``3/img_0007.png``)."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset


class PngFolder(Dataset):
    def __init__(self, path: str, scale: float = 255.0) -> None:
        root = Path(path)
        self.items = sorted(
            (png, int(png.parent.name)) for png in root.glob("*/*.png") if png.parent.name.isdigit()
        )
        self.scale = scale

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        png, label = self.items[index]
        pixels = np.asarray(Image.open(png).convert("L"), dtype=np.float32) / self.scale
        return torch.from_numpy(pixels)[None, :, :], label
