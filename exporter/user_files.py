"""Reading the files a user names (probes, recipes, policies, keys, manifests): regular files only, opened
without blocking, under a size cap; JSON and YAML parsed so that no input can blow up the parser."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from exporter.errors import UsageError


# ------------------------------------------------------------------------------- reading user files
@contextlib.contextmanager
def open_user_file(path: Path, *, what: str, max_bytes: int, no_links: bool = False) -> Iterator[tuple]:
    """``(binary file, os.stat_result)`` of a file a user named, opened the one safe way.

    Opened without blocking (a FIFO or a device cannot hang the open), then checked on the SAME descriptor
    to be a regular file of at most ``max_bytes`` (a link to ``/dev/zero`` or a pipe is refused, not read);
    ``no_links`` also refuses a symbolic link (a private key). Every refusal is a UsageError (exit 2) naming
    ``what``, the path and the cap. Use ``read_user_file`` unless the caller must see the stat (a key's mode).
    """
    path = Path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    flags |= getattr(os, "O_NOFOLLOW", 0) if no_links else 0
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist.", "Check the path.") from None
    except OSError as exc:
        if no_links and path.is_symlink():
            raise UsageError(f"{what} {path} is a symbolic link.", "Pass the file itself.") from None
        raise UsageError(
            f"cannot read {what} {path}: {exc.strerror or exc}.", "Check the path and its permissions."
        ) from None
    st = os.fstat(fd)  # checked before fdopen, which refuses a folder with its own IsADirectoryError
    problem = None
    if stat.S_ISDIR(st.st_mode):
        problem = (f"{what} {path} is a folder, not a regular file.", "Pass the path of a file.")
    elif not stat.S_ISREG(st.st_mode):
        problem = (
            f"{what} {path} is not a regular file (a device, pipe or socket); it is not read.",
            "Pass the path of an ordinary file.",
        )
    elif st.st_size > max_bytes:
        problem = (
            f"{what} {path} is {st.st_size:,} bytes, more than the {max_bytes:,}-byte cap for a {what}.",
            "Pass a smaller file.",
        )
    if problem:
        os.close(fd)
        raise UsageError(*problem)
    with os.fdopen(fd, "rb") as fh:
        yield fh, st


def read_user_file(path: Path, *, what: str, max_bytes: int, max_lines: int | None = None) -> bytes:
    """The bytes of a file a user named (probe, calibration, recipe, policy, key, manifest...), capped.

    See ``open_user_file``: a regular file, opened without blocking, at most ``max_bytes`` (checked again
    on what is read, in case it grows) and, with ``max_lines``, at most that many lines. A refusal is a
    UsageError (exit 2) that names the cap.
    """
    with open_user_file(path, what=what, max_bytes=max_bytes) as (fh, _):
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UsageError(
            f"{what} {path} grew past the {max_bytes:,}-byte cap for a {what} while read.", "Pass a smaller file."
        )
    if max_lines is not None:
        lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
        if lines > max_lines:
            raise UsageError(
                f"{what} {path} has {lines:,} lines, more than the {max_lines:,}-line cap for a {what}.",
                "Pass a shorter file.",
            )
    return data


def no_alias_yaml_loader(what: str):
    """PyYAML's SafeLoader, refusing any alias (``*name``, ``<<: *name``) where it meets one: an alias
    bomb (a few hundred bytes that expand to gigabytes) never gets past its first alias. Every YAML file a
    user gives (recipes, policies) is parsed with it."""
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"YAML aliases (*name) are not allowed in a {what}; write the value out", mark
                )
            return super().compose_node(parent, index)

    return NoAliasLoader


MODEL_JSON_MAX_BYTES = 64_000_000  # a model's config/module JSON (not its tokenizer.json, which loaders read)


def read_user_json(path: Path, *, what: str, max_bytes: int):
    """``read_user_file`` parsed as UTF-8 JSON; UsageError (exit 2) for bad UTF-8, bad JSON or a nesting
    so deep that the parser would overflow (``[[[[...``)."""
    data = read_user_file(path, what=what, max_bytes=max_bytes)
    return parse_json(data, f"{what} {path}")


def parse_json(data: bytes | str, what: str):
    """``json.loads`` whose every failure, deep nesting included, is one UsageError naming ``what``."""
    try:
        return json.loads(data)
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} is not valid UTF-8 (bad byte at offset {exc.start}).", "") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{what} is not valid JSON ({exc.msg}, line {exc.lineno}).", "") from None
    except RecursionError:
        raise UsageError(f"{what} is nested too deeply to be JSON the tool wrote or reads.", "") from None
