"""Segmentation: a label per voxel (`task.SegmentationTask`)."""

from medmap.tasks.segmentation.task import SegmentationTask

__all__ = ["SegmentationTask"]
