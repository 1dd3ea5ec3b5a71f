"""revsnn.data: static and event data sets, batch-wise augmentation, epoch iteration.

::

    from revsnn.data import load_dataset, Loader, BatchAugment
    train = load_dataset("digits", "train")            # ImageSet: images [N, 1, 8, 8], labels
    frames = load_dataset("nmnist", "test", root=DIR, T=10)   # (frames [10, 2, 34, 34], label)
"""

from .aedat4 import read_aedat4
from .events import (
    EVENT_DTYPE,
    events_to_frames,
    read_aedat2,
    read_aedat31,
    read_dvs_gesture_labels,
    read_nmnist,
)
from .limits import DataError
from .loaders import (
    DATASETS,
    Batch,
    DataInfo,
    Loader,
    check_dataset_name,
    data_info,
    list_datasets,
    load_dataset,
)
from .static import DataNotFoundError, ImageFolderSet, ImageSet, read_idx
from .transforms import BatchAugment, Mixup

__all__ = [
    "DATASETS", "EVENT_DTYPE", "Batch", "BatchAugment", "DataError", "DataInfo",
    "DataNotFoundError",
    "ImageFolderSet", "ImageSet", "Loader", "Mixup", "check_dataset_name", "data_info",
    "events_to_frames", "list_datasets", "load_dataset", "read_aedat2", "read_aedat31",
    "read_aedat4", "read_dvs_gesture_labels", "read_idx", "read_nmnist",
]
