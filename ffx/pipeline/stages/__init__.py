"""The commands: index, extract, crop, shard, export, qa, build, status, build.json.

Importing this package registers the stages the engine runs (`ffx.pipeline.engine.registry`): a
new stage is one module here, decorated with `@register_stage`, plus its import below.
"""

from ffx.pipeline.stages import crop, extract, shard  # noqa: F401  (they register themselves)
