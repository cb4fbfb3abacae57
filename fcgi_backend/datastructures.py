"""Containers for request data with the API users know from Werkzeug: MultiDict and Headers."""

from __future__ import annotations

from typing import Iterable, Iterator, Mapping


class MultiDict(Mapping[str, str]):
    """A mapping where a key may carry several values; ``d[key]`` and ``get`` give the first.

    Order of keys and of each key's values is the order they arrived in.
    """

    def __init__(self, pairs: Iterable[tuple[str, object]] = ()) -> None:
        self._lists: dict[str, list] = {}
        for key, value in pairs:
            self._lists.setdefault(key, []).append(value)

    def __getitem__(self, key: str):
        return self._lists[key][0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._lists)

    def __len__(self) -> int:
        return len(self._lists)

    def getlist(self, key: str) -> list:
        """Every value of ``key``, in order; an empty list if there is none."""
        return list(self._lists.get(key, ()))

    def add(self, key: str, value) -> None:
        """Append one more value for ``key``."""
        self._lists.setdefault(key, []).append(value)

    def items(self, multi: bool = False):
        """(key, first value) pairs, or every (key, value) pair with ``multi=True``."""
        if multi:
            return [(k, v) for k, values in self._lists.items() for v in values]
        return [(k, values[0]) for k, values in self._lists.items()]

    def to_dict(self, flat: bool = True) -> dict:
        """A plain dict: first values, or lists of values with ``flat=False``."""
        if flat:
            return {k: values[0] for k, values in self._lists.items()}
        return {k: list(values) for k, values in self._lists.items()}

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
