"""The generic machinery behind `ift.config`: YAML files with `include:`, `key.sub=value` overrides,
and building a tree of dataclasses from plain data, each value checked against its field's type.

Nothing here knows the config's sections: the root dataclass is passed in. Field types understood:
bool, int, float, str, Any, Optional/Union, list[X], dict (with `typing.Literal` keys, checked),
nested dataclasses and `typing.Literal[...]` (a fixed set of choices).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from typing import Any, Literal, Union

import yaml

from ift.errors import UserError


class ConfigError(UserError):
    """A config mistake, naming the dotted field."""


class _ChoiceError(ConfigError):
    """A value of the right kind that is not one of its field's choices."""


# --------------------------------------------------------------------------- files, merges, overrides


def read_yaml(path: str, _seen: tuple = ()) -> dict:
    """Read a YAML config, resolving `include:` (a path or list, relative to this file) first."""
    path = os.path.abspath(path)
    if path in _seen:
        raise ConfigError(f"{path}: include cycle ({' -> '.join(_seen + (path,))})")
    if os.path.isdir(path):
        raise ConfigError(f"{path}: is a directory, expected a YAML config file")
    try:
        with open(path, encoding="utf-8-sig") as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid UTF-8 (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if raw is None:  # an empty or comment-only file would silently run with every default
        raise ConfigError(f"{path}: the config file is empty (or only comments)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    includes = raw.pop("include", None) or []
    merged: dict = {}
    for inc in [includes] if isinstance(includes, str) else includes:
        merged = deep_merge(merged, read_yaml(os.path.join(os.path.dirname(path), inc), _seen + (path,)))
    return deep_merge(merged, raw)


def deep_merge(base: dict, top: dict) -> dict:
    """A new dict: `base` with `top`'s keys on top; where both hold a dict, those are merged the same
    way. Neither argument is modified."""
    out = dict(base)
    for k, v in top.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_override(root: type, raw: dict, override: str) -> None:
    """Apply one `a.b.c=value` to `raw`, the plain data of a `root` dataclass tree. The value is read
    as YAML (so 1e-4, true, [a, b] work), except that a field typed as a string keeps the text."""
    if "=" not in override:
        raise ConfigError(f"override '{override}' is not of the form key.sub=value")
    key, text = override.split("=", 1)
    parts = key.strip().split(".")
    cls: Any = root  # None inside a free-form dict
    node, prefix = raw, ""
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(cls) if cls is not None else None  # None: inside a free-form dict
        if hints is not None and part not in hints:
            raise _unknown_key(part, prefix, hints)
        if i == len(parts) - 1:
            node[part] = yaml.safe_load(text) if text.strip() else ""
            if isinstance(node[part], (int, float)) and hints is not None:
                # keep `run.name=007` a string: only fields typed as numbers take YAML's number reading
                if str in _plain_types(hints[part]) and not ({int, float, bool} & _plain_types(hints[part])):
                    node[part] = text
            return
        tp = hints[part] if hints is not None else None
        if tp is not None and not dataclasses.is_dataclass(tp) and dict not in _plain_types(tp):
            raise ConfigError(f"'{prefix + '.' if prefix else ''}{part}' is not a section; cannot set '{key}'")
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set '{key}': '{part}' is not a mapping")
        cls = tp if tp is not None and dataclasses.is_dataclass(tp) else None
        prefix = f"{prefix}.{part}" if prefix else part


# --------------------------------------------------------------------------- building


def build(cls: Any, values: dict, path: str = ""):
    """A `cls` dataclass from a mapping, each value coerced to its field's type."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            raise _unknown_key(str(key), path, hints)
        kwargs[key] = _coerce(value, hints[key], f"{path}.{key}" if path else key)
    return cls(**kwargs)


def _coerce(value: Any, tp, path: str) -> Any:
    """Turn a YAML value into the field's declared type, or raise naming the field."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as e:
                errors.append(e)
        # a value of the right kind but not one of the choices says so; otherwise, no kind fitted
        wrong_choice = [e for e in errors if isinstance(e, _ChoiceError)]
        raise (
            wrong_choice[0]
            if wrong_choice
            else errors[-1]
            if len(errors) == 1
            else ConfigError(
                f"{path}: expected {' or '.join(_type_name(a) for a in args if a is not type(None))}, got {value!r}"
            )
        )
    if origin is Literal:
        value = _coerce(value, _base_type(tp), path)
        _check_choices(value, tp, path)
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return build(tp, value, path)
    if origin is list or tp is list:
        if isinstance(value, str):  # `a.b=x,y` on the command line
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item_tp,) = args or (Any,)
        return [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:  # values are kept as written; Literal keys are checked
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        _check_choices(value, tp, path)
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str, float)):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        try:
            as_float = float(value)
            if as_float != int(as_float):
                raise ValueError
            return int(as_float)
        except (ValueError, OverflowError):
            raise ConfigError(f"{path}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{path}: unsupported type {tp}")


def _base_type(tp) -> type:
    """The plain type of a field's type: Literal["a", "b"] -> str, list[str] -> list, int -> int."""
    if typing.get_origin(tp) is Literal:
        return type(typing.get_args(tp)[0])
    return typing.get_origin(tp) or tp


def _plain_types(tp) -> set:
    args = typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,)
    return {_base_type(a) for a in args}


def _type_name(tp) -> str:
    tp = _base_type(tp)
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _unknown_key(key: str, path: str, known) -> ConfigError:
    dotted = f"{path}.{key}" if path else key
    known = list(known)
    close = (
        difflib.get_close_matches(key, known, n=1, cutoff=0.8)
        or [k for k in known if key.startswith(k + "_") or key.endswith("_" + k)][:1]
        or difflib.get_close_matches(key, known, n=1)
    )
    hint = f" (did you mean '{f'{path}.' if path else ''}{close[0]}'?)" if close else ""
    return ConfigError(f"unknown config key '{dotted}'{hint}")


# --------------------------------------------------------------------------- checking


def require(ok: bool, path: str, value: Any, must: str) -> None:
    """Raise `<path>: <must>, got <value>` unless ok."""
    if not ok:
        raise ConfigError(f"{path}: {must}, got {value!r}")


def check_choices(section, at: str) -> None:
    """Check every Literal-typed field of a section dataclass (not of the sections inside it): a
    config built in code did not go through `build`."""
    for name, tp in typing.get_type_hints(type(section)).items():
        _check_choices(getattr(section, name), tp, f"{at}.{name}")


def _check_choices(value: Any, tp, path: str) -> None:
    """Raise if a Literal anywhere in `tp` (a list's items, a dict's keys) does not hold its value;
    values of another kind (a dict where a Literal is one option of a Union) are left alone."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal and not isinstance(value, (dict, list, tuple)):
        if value not in args:
            raise _ChoiceError(f"{path}: must be one of {', '.join(map(str, args))}, got {value!r}")
    elif origin in (Union, types.UnionType) and value is not None:
        for arg in args:
            _check_choices(value, arg, path)
    elif origin is list and isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_choices(v, args[0], f"{path}[{i}]")
    elif origin is dict and isinstance(value, dict):
        for k in value:
            _check_choices(k, args[0], f"{path}.{k}")
