"""Errors a user can cause, each naming the case, the file and the field, and saying what to do.

Every error the engine records for a case is a :class:`QAInputError` (or subclass); its
``str()`` is the full sentence shown in the terminal, the store and the report.
"""

from __future__ import annotations

__all__ = ["QAInputError", "ProtocolError", "CaseTableError", "ReaderError"]


class QAInputError(Exception):
    """Bad input: carries where it came from so the run can record it and go on.

    Parameters
    ----------
    message : str
        What is wrong and what to do about it.
    case_id, path, field, role, check : str, optional
        Where: the case, the file, the field (DICOM keyword, YAML key path, CSV column),
        the role (``ct``, ``sct`` ...) and the check, when known.
    """

    def __init__(self, message: str, *, case_id: str | None = None, path: str | None = None,
                 field: str | None = None, role: str | None = None,
                 check: str | None = None) -> None:
        self.message = message
        self.case_id = case_id
        self.path = None if path is None else str(path)
        self.field = field
        self.role = role
        self.check = check
        super().__init__(message)

    def located(self, **where: str | None) -> QAInputError:
        """Fill in missing location fields (case, path, role, check) and return self."""
        for key, value in where.items():
            if value is not None and getattr(self, key, None) is None:
                setattr(self, key, value)
        return self

    def __str__(self) -> str:
        where = []
        if self.case_id is not None:
            where.append(f"case {self.case_id!r}")
        if self.check is not None:
            where.append(f"check {self.check!r}")
        if self.role is not None:
            where.append(f"role {self.role!r}")
        if self.path is not None:
            where.append(f"file {self.path}")
        if self.field is not None:
            where.append(f"field {self.field}")
        return f"{'; '.join(where)}: {self.message}" if where else self.message


class ProtocolError(QAInputError):
    """The protocol YAML is malformed or violates the schema."""


class CaseTableError(QAInputError):
    """The case table (CSV) is malformed."""


class ReaderError(QAInputError):
    """A medical image, dose or structure file cannot be read or is not what was expected."""
