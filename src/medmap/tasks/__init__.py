"""Everything that differs between tasks, one package per task (`base.Task` lists what each supplies);
the loops, the cache, the run and the predictor are shared and call them."""

from __future__ import annotations


def task_for(plan_or_name):
    """The `Task` object of a plan's task (or of a task's name): the one mapping from name to task."""
    from medmap.data.dataset import check_task_name

    name = plan_or_name if isinstance(plan_or_name, str) else plan_or_name.task
    if name == "classification":
        from medmap.tasks.classification import ClassificationTask

        return ClassificationTask()
    if name == "segmentation":
        from medmap.tasks.segmentation import SegmentationTask

        return SegmentationTask()
    if name == "detection":
        from medmap.tasks.detection import DetectionTask

        return DetectionTask()
    check_task_name(name)  # refuses the name: every task medmap has is one of the branches above
    raise AssertionError(f"task {name!r} is named in medmap.data.dataset.TASKS but has no package here")
