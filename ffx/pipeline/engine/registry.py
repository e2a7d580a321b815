"""The stage registry: every stage module registers its Stage class here (`@register_stage`), and
the engine, `ffx build`, `ffx status` and `ffx slurm` read the stages from it.

As with timm's `@register_model`, the registry imports no stage: the stages register when
`ffx.pipeline.stages` is imported (its `__init__` imports each stage module), which happens as
soon as any stage module is imported. Importing this module is cheap (no pyarrow, no pydantic).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ffx.pipeline.engine.stage import Stage

INDEX = "videos"  # the build's first table, written by `ffx index` (not a stage of the engine)
INDEX_COMMAND = "ffx index"

_registered: dict[str, type[Stage]] = {}  # table name -> Stage class


def register_stage(cls: type[Stage]) -> type[Stage]:
    """Class decorator: make `cls` the stage that writes table `cls.name` from table `cls.upstream`,
    run by `cls.command`."""
    for attribute in ("name", "unit", "command", "upstream", "schema", "sort_by"):
        if not hasattr(cls, attribute):
            raise TypeError(f"stage {cls.__name__} does not set {attribute!r}")
    known = _registered.get(cls.name)
    if known is not None and known.__qualname__ != cls.__qualname__:
        raise ValueError(f"stage table {cls.name!r} is registered twice: {known.__name__} and {cls.__name__}")
    _registered[cls.name] = cls
    return cls


def _stages() -> dict[str, type[Stage]]:
    if not _registered:
        # A bug, never a user's doing: the caller reads the registry before any stage module ran.
        raise LookupError("no stage is registered: import ffx.pipeline.stages first")
    return _registered


def stage_names() -> tuple[str, ...]:
    """The stage tables in pipeline order: each after the table it is made from (from `videos`
    on), stages made from the same table in the order they registered."""
    stages, order = _stages(), []
    made = {INDEX}
    while len(order) < len(stages):
        ready = [name for name, cls in stages.items() if name not in made and cls.upstream in made]
        if not ready:
            stuck = sorted(set(stages) - made)
            raise ValueError(f"stages {stuck} are not made from {INDEX!r} or another stage's table")
        order.append(ready[0])
        made.add(ready[0])
    return tuple(order)


def upstream_chain(name: str) -> tuple[str, ...]:
    """The tables stage `name` depends on, from `videos` down to its own."""
    chain = [name]
    while chain[-1] != INDEX:
        chain.append(stage_class(chain[-1]).upstream)
    return tuple(reversed(chain))


def stage_class(name: str) -> type[Stage]:
    """The Stage class that makes table `name`."""
    try:
        return _stages()[name]
    except KeyError:
        raise ValueError(
            f"no stage makes table {name!r}; the stages make {', '.join(stage_names())}"
        ) from None


def make_stage(name: str) -> Stage:
    """A stage that makes table `name`, with its default options (for reading and planning)."""
    return stage_class(name)()


def command_of(name: str, default: str | None = None) -> str:
    """The command that writes table `name` (`ffx index` for the videos); `default` for a name no
    stage makes, where given."""
    if name == INDEX:
        return INDEX_COMMAND
    if default is not None and name not in _registered:
        return default
    return stage_class(name).command


def array_stages(reading_videos: bool = False) -> tuple[str, ...]:
    """The verbs of the stages that `ffx slurm` runs as arrays of parts, in pipeline order (only
    those whose command reads the videos, with `reading_videos`)."""
    classes = _stages()
    return tuple(
        classes[name].command.split()[-1]
        for name in stage_names()
        if classes[name].array and (classes[name].reads_videos or not reading_videos)
    )
