"""The corpus of malformed inputs: every reader, the case table and the protocol.

Each entry writes its bad input into a folder given at test time and says what the error
must name (see :class:`~tests.bad_inputs.cohort.BadInput`). Three families:

* :data:`READER_INPUTS` (:mod:`tests.bad_inputs.files`): one bad file or folder for a
  case-table role (``ct``, ``sct``, ``body``, ``dose_ref``) or an RTSTRUCT; read directly
  with the role's reader, and as one bad case of the cohort written by
  :func:`~tests.bad_inputs.cohort.write_cohort`;
* :data:`TABLE_INPUTS` (:mod:`tests.bad_inputs.tables`): a case-table row or file with a
  mistake; row problems concern case ``BAD``, table problems stop the run;
* :data:`PROTOCOL_INPUTS` (:mod:`tests.bad_inputs.tables`): a protocol YAML with a mistake.

Deterministic: fixed seeds and shapes; only DICOM UIDs are random (they do not affect the
errors). Files are a few kB each.
"""

from __future__ import annotations

from tests.bad_inputs.cohort import (
    REFERENCE_FRAME_UID,
    BadInput,
    bad_row,
    read_as,
    reference_volume,
    write_cohort,
    write_good_case,
    write_table,
)
from tests.bad_inputs.files import READER_INPUTS, rtstruct_file
from tests.bad_inputs.tables import PROTOCOL_INPUTS, TABLE_INPUTS

__all__ = [
    "ALL_INPUTS", "READER_INPUTS", "TABLE_INPUTS", "PROTOCOL_INPUTS", "BadInput", "bad_row",
    "read_as", "reference_volume", "write_cohort", "write_good_case", "write_table",
    "rtstruct_file", "REFERENCE_FRAME_UID",
]

ALL_INPUTS: tuple[BadInput, ...] = READER_INPUTS + TABLE_INPUTS + PROTOCOL_INPUTS
