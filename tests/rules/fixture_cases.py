"""Rule fixture folders whose training script is stored as a variant of a shared base script.

Many fixture cases differ from a few base scripts by a handful of lines. Such a case folder holds
`variant.json` instead of `train_gpt.py`:

    {"base": "<name>", "edits": [["old text", "new text"], ...]}

`base` is a name under rules/checks/fixtures/_bases/ (`<name>.py`) or, when it contains a `/`, a
path relative to the repository root (the example submission's script serves so). The edits are
exact-substring replacements applied in order; each `old` must occur exactly once in the text at
that point, so a drifting base fails loudly instead of silently producing another script.

`materialize_case` turns such a folder into an ordinary records folder in a scratch directory;
folders without `variant.json` are copied unchanged, so callers can treat every case alike.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "rules" / "checks" / "fixtures"
BASES = FIXTURES / "_bases"
VARIANT = "variant.json"
SCRIPT = "train_gpt.py"


class VariantError(ValueError):
    """A variant.json that cannot be applied to its base."""


def base_path(name: str) -> Path:
    return REPO / name if "/" in name else BASES / f"{name}.py"


def apply_edits(text: str, edits: list[list[str]], where: str = "variant") -> str:
    for i, edit in enumerate(edits):
        if not (isinstance(edit, list) and len(edit) == 2 and all(isinstance(s, str) for s in edit)):
            raise VariantError(f"{where}: edit {i} is not a pair of strings")
        old, new = edit
        found = text.count(old) if old else 0
        if found != 1:
            raise VariantError(f"{where}: edit {i} old text occurs {found} times (must be exactly once): {old[:80]!r}")
        text = text.replace(old, new, 1)
    return text


def variant_script(variant_file: Path) -> str:
    """The script text a variant.json describes."""
    spec = json.loads(variant_file.read_text())
    base = base_path(spec["base"])
    if not base.is_file():
        raise VariantError(f"{variant_file}: base {spec['base']!r} not found at {base}")
    text = base.read_bytes().decode("utf-8")
    return apply_edits(text, spec.get("edits", []), where=str(variant_file))


def case_script(case_dir: Path) -> str | None:
    """A case's train_gpt.py text, whether stored whole or as a variant; None when it has none."""
    if (case_dir / VARIANT).is_file():
        return variant_script(case_dir / VARIANT)
    script = case_dir / SCRIPT
    return script.read_bytes().decode("utf-8") if script.is_file() else None


def materialize_case(case_dir: Path, dest_dir: Path) -> Path:
    """Copy case_dir to dest_dir/<case name> with train_gpt.py written out from its variant.

    Returns the new folder, which has exactly the files the case had before its script was
    turned into a variant (variant.json itself is not copied)."""
    case_dir = Path(case_dir)
    out = Path(dest_dir) / case_dir.name
    has_variant = (case_dir / VARIANT).is_file()
    if has_variant and (case_dir / SCRIPT).exists():
        raise VariantError(f"{case_dir}: holds both {SCRIPT} and {VARIANT}")
    shutil.copytree(case_dir, out, ignore=shutil.ignore_patterns(VARIANT) if has_variant else None)
    if has_variant:
        (out / SCRIPT).write_bytes(variant_script(case_dir / VARIANT).encode("utf-8"))
    return out
