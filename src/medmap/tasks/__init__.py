"""What differs between tasks: network head, loss, metrics, outputs. The loops are shared."""


def task_for(plan):
    """The `Task` object for a plan's task."""
    from medmap.errors import ConfigError

    if plan.task == "classification":
        from medmap.tasks.classification import ClassificationTask

        return ClassificationTask()
    if plan.task == "segmentation":
        from medmap.tasks.segmentation import SegmentationTask

        return SegmentationTask()
    raise ConfigError(f"task {plan.task!r}: medmap trains classification and segmentation")
