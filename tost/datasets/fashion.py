"""Fashion-MNIST (Xiao et al., 2017): 60,000 training and 10,000 test 28×28 grey images of 10 classes.

The four original files (`train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`,
`t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz`) are looked for in `data.root`, in
torchvision's layout under it (`FashionMNIST/raw/`), and where Debian's package
`dataset-fashion-mnist` installs them (`/usr/share/datasets/fashion-mnist/`); with `data.download`
they are fetched with torchvision's own downloader from its mirror. They are parsed by torchvision's
own IDX reader (`torchvision.datasets.mnist`) and verified before use, in one of two ways: the
compressed file's md5 is torchvision's (a file as the official mirror serves it), or the md5 of the
decompressed IDX bytes is the one below. The second exists because Debian recompresses the files
(`gzip -n`, no name or time in the header), which changes the .gz bytes but not the data; its values
were taken from the Debian package and checked against the dataset's published facts (60,000 and
10,000 images, 6,000 and 1,000 per class, the first labels 9 0 0 3 0 and 9 2 1 1 6, mean pixel 0.286).
Nothing is written to `data.root`: the files are decompressed into a temporary folder and read there.
"""

from __future__ import annotations

import gzip
import hashlib
import tempfile
import zlib
from pathlib import Path

import torch

from tost.datasets.base import RawDataset
from tost.errors import DataError

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz")  # fmt: skip
# md5 of each file's decompressed IDX bytes (see the module docstring)
IDX_MD5 = {
    "train-images-idx3-ubyte.gz": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte.gz": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte.gz": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte.gz": "15d484375f8d13e6eb1aabb0c3f46965",
}
FIX = "install them with `make fashion` (apt-get install dataset-fashion-mnist), or put the four .gz files in"


def _gz_md5() -> dict[str, str]:
    """The md5 of each official .gz file, as torchvision lists it."""
    from torchvision.datasets import FashionMNIST

    return dict(FashionMNIST.resources)


def locate(name: str, root: Path) -> Path | None:
    """Where file `name` is: data.root, torchvision's layout under it, or Debian's location."""
    for folder in (root, root / "FashionMNIST" / "raw", DEBIAN):
        if (folder / name).is_file():
            return folder / name
    return None


def _download(root: Path) -> None:
    from torchvision.datasets import FashionMNIST
    from torchvision.datasets.utils import download_url

    for name, md5 in FashionMNIST.resources:
        if locate(name, root) is None:
            try:
                download_url(f"{FashionMNIST.mirrors[0]}{name}", str(root), filename=name, md5=md5)
            except (OSError, RuntimeError) as err:  # URLError is an OSError
                raise DataError(f"Fashion-MNIST: {name}: download failed ({err}); {FIX} {root}") from None


def verified_idx(path: Path, name: str) -> bytes:
    """The decompressed IDX bytes of `path`, checked against torchvision's or our md5."""
    packed = path.read_bytes()
    try:
        data = gzip.decompress(packed)
    except (EOFError, OSError, zlib.error):  # BadGzipFile is an OSError
        raise DataError(f"{path}: truncated or not a gzip file; delete it and get {name} again") from None
    if hashlib.md5(packed).hexdigest() != _gz_md5()[name] and hashlib.md5(data).hexdigest() != IDX_MD5[name]:
        raise DataError(f"{path}: checksum mismatch (not the original {name}); delete it and get it again")
    return data


def _read(data: bytes, labels: bool) -> torch.Tensor:
    """The IDX parser of torchvision, on a temporary copy of the decompressed bytes."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    with tempfile.NamedTemporaryFile(suffix=".idx") as f:
        f.write(data)
        f.flush()
        return read_label_file(f.name) if labels else read_image_file(f.name)


def load(root: Path, download: bool) -> RawDataset:
    """The official train and test splits as uint8 [N, 1, 28, 28] images and int64 labels."""
    root = Path(root)
    missing = [n for n in FILES if locate(n, root) is None]
    if missing and download:
        _download(root)
        missing = [n for n in FILES if locate(n, root) is None]
    if missing:
        raise DataError(f"Fashion-MNIST: {missing[0]} not found in {root} nor {DEBIAN}; {FIX} {root}")
    tensors = {n: _read(verified_idx(locate(n, root), n), "labels" in n) for n in FILES}
    x_train, y_train, x_test, y_test = (tensors[n] for n in FILES)
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise DataError(f"Fashion-MNIST in {root}: images and labels differ in number; get the files again")
    return RawDataset(
        train_x=x_train.unsqueeze(1).contiguous(), train_y=y_train.to(torch.int64),
        test_x=x_test.unsqueeze(1).contiguous(), test_y=y_test.to(torch.int64), num_classes=10,
    )  # fmt: skip
