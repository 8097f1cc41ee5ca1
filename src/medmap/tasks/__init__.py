"""What differs between tasks: network head, loss, metrics, outputs. The loops are shared."""


def task_for(plan):
    """The `Task` object for a plan's task."""
    from medmap.errors import ConfigError

    if plan.task == "classification":
        from medmap.tasks.classification import ClassificationTask

        return ClassificationTask()
    raise ConfigError(f"task {plan.task!r} cannot be trained yet (classification can)")
