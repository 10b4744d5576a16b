"""Name -> plug-in registries. Registration happens by import, in each package's ``__init__``."""
from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from .errors import GuidetuneError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of plug-in classes (regularizers, tasks, analyses)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._items[name] = obj
            setattr(obj, "registry_name", name)
            return obj

        return deco

    def get(self, name: str) -> T:
        if name not in self._items:
            raise GuidetuneError(f"unknown {self.kind} '{name}'.{did_you_mean(name, self._items)}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items


# Plug-in packages by kind: a registry is filled when its package is imported (each package's __init__
# imports its plug-ins, the one visible place of registration). Code below the plug-ins -- config
# validation -- asks for a registry by kind at run time instead of importing the plug-ins it validates.
_PACKAGES = {"regularizer": ("guidetune.regularizers", "REGULARIZERS"), "task": ("guidetune.tasks", "TASKS"),
             "analysis": ("guidetune.analysis", "ANALYSES")}


def plugins(kind: str) -> Registry:
    """The filled registry of ``kind`` (regularizer | task | analysis), its package imported on first use."""
    import importlib

    module, attr = _PACKAGES[kind]
    return getattr(importlib.import_module(module), attr)
