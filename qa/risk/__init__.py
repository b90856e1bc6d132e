"""The risk register: failure modes of a risk analysis (AMDEC / FMEA) scored from the evidence.

A template (``reports/risk_templates/default.yaml`` or the department's own, format in
``docs/risk.md``) lists failure modes with their effect, TG-100 severity S, linked checks and
mitigations. :func:`assess_run` reads a run's stored verdicts and scores each mode: occurrence
O from the upper end of the Clopper–Pearson interval of the linked checks' failure rate mapped
to the TG-100 bands, detectability D from how the protocol checks the failure, RPN = O × S × D,
a priority (S >= 8 is high whatever the RPN), the ISO 14971 probability × severity region, and
the change since the previous finished run of the same protocol. A mode without evidence is
"not assessed", never scored by default.

Sources: AAPM TG-100 (Huq et al., Med Phys 2016;43(7):4209, doi:10.1118/1.4947547) Table II —
severity scale confirmed, occurrence and detectability bands NOT confirmed against a copy of
the table (flagged ``verified: false`` in ``qa/risk/data/tg100.yaml`` and in the report);
Clopper & Pearson, Biometrika 1934; ISO 14971:2019 (example matrix, configurable).

Examples
--------
>>> from qa.risk import clopper_pearson_upper, load_template
>>> round(clopper_pearson_upper(0, 30), 4)          # no failure in 30 cases, 95 % two-sided
0.1157
>>> load_template().scales.occurrence(0.1157)       # > 5 %: TG-100 O = 10
10
"""

from qa.risk._assess import (
    CHANGES,
    PRIORITIES,
    RISK_CHECK_ID,
    TEMPLATE_DETAIL,
    RiskAssessment,
    RiskRow,
    assess_run,
    recorded_template,
)
from qa.risk._evidence import Evidence
from qa.risk._scales import (
    DETECTION_CLASSES,
    ISO_REGIONS,
    ISO_SEVERITIES,
    IsoMatrix,
    RiskTemplateError,
    Scales,
    clopper_pearson_interval,
    clopper_pearson_upper,
    occurrence_rank,
)
from qa.risk._template import (
    DEFAULT_TEMPLATE,
    EvidenceLink,
    FailureMode,
    RiskTemplate,
    load_template,
    localized,
    parse_record,
    template_record,
)

__all__ = [
    "assess_run", "RiskAssessment", "RiskRow", "Evidence", "RiskTemplate", "FailureMode",
    "EvidenceLink", "RiskTemplateError", "Scales", "IsoMatrix", "load_template",
    "template_record", "parse_record", "recorded_template", "localized",
    "clopper_pearson_interval", "clopper_pearson_upper", "occurrence_rank", "PRIORITIES",
    "CHANGES", "DETECTION_CLASSES", "ISO_SEVERITIES", "ISO_REGIONS", "DEFAULT_TEMPLATE",
    "RISK_CHECK_ID", "TEMPLATE_DETAIL",
]
