"""Input errors: the submission could not be read at all (exit code 3, HTTP 4xx)."""
from __future__ import annotations


class InputError(Exception):
    """A submission that cannot be read. `code` is stable; `message` is one human sentence."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


# Stable codes (documented in README; the API maps them to 4xx)
NOT_FOUND = "not_found"
NOT_A_RECORDS_FOLDER = "not_a_records_folder"
BAD_ARCHIVE = "bad_archive"
UNSAFE_PATH = "unsafe_path"            # absolute path, '..', link escaping the folder
TOO_MANY_MEMBERS = "too_many_members"  # > 1,000 members
TOO_LARGE = "too_large"                # > 200 MB unpacked
ZIP_BOMB = "zip_bomb"                  # compression ratio > 100
