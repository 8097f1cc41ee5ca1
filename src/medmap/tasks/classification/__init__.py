"""Classification: a class per image or per lesion (`task.ClassificationTask`)."""

from medmap.tasks.classification.task import ClassificationTask

__all__ = ["ClassificationTask"]
