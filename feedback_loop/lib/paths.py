"""Names that become one component of a path (datasets, versions, file names, asset key parts,
partition keys): refused when they could name anything outside their folder."""

import re

# A separator of any platform, a NUL or another control character, or only dots ("." / "..").
_UNSAFE = re.compile(r"[/\\\x00-\x1f\x7f]|^\.+$")


class UnsafeName(ValueError):
    """A name that would leave its folder or is not a plain file name."""


def path_component(name: str, what: str) -> str:
    """`name` itself when it is a plain file or folder name; else `UnsafeName`."""
    if not isinstance(name, str) or not name or _UNSAFE.search(name):
        raise UnsafeName(f"{what} {name!r} is not a plain file name: refused (it could point outside its folder)")
    return name
