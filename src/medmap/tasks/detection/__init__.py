"""Detection: findings (centre and diameter in LPS mm, with a score) in a volume (`task.DetectionTask`)."""

from medmap.tasks.detection.task import DetectionTask

__all__ = ["DetectionTask"]
