"""Names of the checks a protocol may use, mapped lazily to their classes."""

from __future__ import annotations

from importlib import import_module

from checks.base import Check

__all__ = ["get_check", "available_checks"]

_REGISTRY: dict[str, str] = {
    "noise": "checks.noise_check:NoiseCheck",
    "noise_dose": "checks.noise_dose:NoiseDoseCheck",
    "ct_number": "checks.ct_number:CTNumberCheck",
    "dvh": "checks._dvh_check:DVHCheck",
    "gamma": "checks._gamma_check:GammaCheck",
    "hu_accuracy": "checks.hu:HUAccuracyCheck",
    "segmentation": "checks.segmentation:SegmentationCheck",
    "subgroup_bias": "checks.bias:SubgroupBiasCheck",
}


def available_checks() -> list[str]:
    """Sorted names accepted in a protocol's ``check:`` key."""
    return sorted(_REGISTRY)


def get_check(name: str) -> type[Check]:
    """The check class registered under ``name``.

    Raises
    ------
    KeyError
        With the list of known names when ``name`` is unknown.
    """
    try:
        target = _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown check {name!r}; known checks: {', '.join(available_checks())}"
        ) from None
    module_name, _, attr = target.partition(":")
    return getattr(import_module(module_name), attr)
