"""Containers for request data with the API users know from Werkzeug: MultiDict and Headers."""

from __future__ import annotations

from typing import Iterable, Iterator, Mapping


class MultiDict(Mapping[str, str]):
    """A mapping where a key may carry several values; ``d[key]`` and ``get`` give the first.

    Order of keys and of each key's values is the order they arrived in. Most keys have one value,
    so the first values live in a plain dict and only further values in a second one.
    """

    def __init__(self, pairs: Iterable[tuple[str, object]] = ()) -> None:
        self._first: dict[str, object] = {}
        self._more: dict[str, list] = {}
        for key, value in pairs:
            self.add(key, value)

    @classmethod
    def from_lists(cls, keys: list[str], values: list) -> "MultiDict":
        """keys[i] -> values[i]; with unique keys the dict is built without a Python-level loop."""
        if len(set(keys)) == len(keys):
            new = cls()
            new._first = dict(zip(keys, values))
            return new
        return cls(zip(keys, values))

    def __getitem__(self, key: str):
        return self._first[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    def __contains__(self, key: object) -> bool:
        return key in self._first

    def getlist(self, key: str) -> list:
        """Every value of ``key``, in order; an empty list if there is none."""
        if key not in self._first:
            return []
        return [self._first[key], *self._more.get(key, ())]

    def add(self, key: str, value) -> None:
        """Append one more value for ``key``."""
        if key in self._first:
            self._more.setdefault(key, []).append(value)
        else:
            self._first[key] = value

    def items(self, multi: bool = False):
        """(key, first value) pairs, or every (key, value) pair with ``multi=True``."""
        if not multi or not self._more:
            return list(self._first.items())
        return [(k, v) for k in self._first for v in self.getlist(k)]

    def values(self, multi: bool = False):
        """First values, or every value with ``multi=True``."""
        return [v for _, v in self.items(multi)]

    def to_dict(self, flat: bool = True) -> dict:
        """A plain dict: first values, or lists of values with ``flat=False``."""
        if flat:
            return dict(self._first)
        return {k: self.getlist(k) for k in self._first}

    def __repr__(self) -> str:
        return f"MultiDict({self.items(multi=True)!r})"


class Headers(Mapping[str, str]):
    """Request headers read from a WSGI environ, looked up without regard to case."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._values: dict[str, str] = {}
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                self._values[key[5:].replace("_", "-").title()] = value
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
                self._values[key.replace("_", "-").title()] = value

    @staticmethod
    def _key(name: str) -> str:
        return name.replace("_", "-").title()

    def __getitem__(self, name: str) -> str:
        return self._values[self._key(name)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._key(name) in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Headers({self._values!r})"
