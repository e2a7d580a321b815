"""What runs in the worker processes of the stages: one module per stage, cheap to import (no pyarrow, no
pydantic), since every spawned worker imports its module before its first task."""
