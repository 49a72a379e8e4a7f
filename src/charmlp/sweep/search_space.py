"""The Optuna sweeper's search space: Hydra's sweep syntax (choice, range, interval, tag(log, ...)) as distributions.

The same syntax and meaning as hydra-optuna-sweeper had: `choice(a, b)` or `a,b` is categorical, `range(lo, hi[,
step])` an integer (or stepped float) range with `hi` included, `interval(lo, hi)` a uniform float (int when both
ends are ints), `tag(log, interval(lo, hi))` the same on a log scale. Anything else on the command line is a fixed
override that every trial gets as given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from charmlp.errors import CharmlpError

_ABSENT = object()


def parse(params: Mapping[str, Any], arguments: Sequence[str], config: DictConfig) -> tuple[dict[str, Any], list[str]]:
    """(name -> optuna distribution, fixed overrides): `hydra.sweeper.params` and the command line's sweeps.

    Raises CharmlpError naming the entry for a line Hydra cannot parse, a key the config lacks, or a range Optuna
    refuses (low above high, a log scale through zero), so a bad search-space file stops before any trial runs.
    """
    lines = [f"{key}={value}" for key, value in params.items()]
    space: dict[str, Any] = {}
    fixed: list[str] = []
    for line in [*lines, *arguments]:
        override = _parse_line(line)
        key = override.get_key_element()
        if not override.is_sweep_override():
            fixed.append(override.input_line or line)
            space.pop(key, None)  # a fixed value on the command line beats the file's search range
            continue
        known = override.key_or_group in config.hydra.runtime.choices or _select(config, key) is not _ABSENT
        if not known and not override.is_add():
            raise CharmlpError(f"hydra.sweeper.params: {key} is not a key of the config (add it with +{key})")
        space[key] = distribution(override)
        fixed = [f for f in fixed if _parse_line(f).get_key_element() != key]
    return space, fixed


def distribution(override: Override) -> Any:
    """The Optuna distribution of one sweep override (see the module's docstring for the mapping)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    value, key = override.value(), override.get_key_element()
    try:
        if override.is_choice_sweep() or (isinstance(value, RangeSweep) and value.shuffle):
            choices = list(override.sweep_iterator(transformer=Transformer.encode))
            if not all(isinstance(c, (str, int, float, bool, type(None))) for c in choices):
                raise ValueError("a choice takes strings, numbers, booleans or null")
            return CategoricalDistribution(choices)
        if isinstance(value, RangeSweep):
            if any(isinstance(v, float) for v in (value.start, value.stop, value.step)):
                return FloatDistribution(value.start, value.stop, step=value.step)
            return IntDistribution(int(value.start), int(value.stop), step=int(value.step))
        if isinstance(value, IntervalSweep):
            log = "log" in value.tags
            if isinstance(value.start, int) and isinstance(value.end, int):
                return IntDistribution(value.start, value.end, log=log)
            return FloatDistribution(value.start, value.end, log=log)
    except ValueError as err:
        raise CharmlpError(f"hydra.sweeper.params: {key}: {err}") from None
    raise CharmlpError(f"hydra.sweeper.params: {key}: use choice(...), range(...) or interval(...)")


def override_line(name: str, value: Any) -> str:
    """A trial's value as a command-line override (`model.dropout=0.31`, `data.path=null`)."""
    return f"{name}={'null' if value is None else value}"


def _parse_line(line: str) -> Override:
    try:
        return OverridesParser.create().parse_overrides([line])[0]
    except HydraException as err:
        raise CharmlpError(f"hydra.sweeper.params: cannot read {line!r}: {str(err).splitlines()[0]}") from None


def _select(config: DictConfig, key: str) -> Any:
    return OmegaConf.select(config, key, default=_ABSENT, throw_on_resolution_failure=False)
