"""What a label means, as coded concepts a PACS and a viewer understand (SNOMED CT where one exists).

A bundle stores each label's meaning next to its name. Names medmap knows map to SNOMED CT codes
(DICOM CID 7150/7151-style category + type); any other name gets a code in medmap's private scheme
``99MEDMAP`` (DICOM allows local schemes whose designator starts with 99), so an object is still valid
and the name is preserved.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Code:
    value: str
    scheme: str
    meaning: str

    def to_dict(self) -> dict:
        return asdict(self)

    def to_highdicom(self):
        from highdicom.sr import CodedConcept

        return CodedConcept(value=self.value, scheme_designator=self.scheme, meaning=self.meaning)


@dataclass(frozen=True)
class Meaning:
    """A label's coded meaning: what kind of thing (category) and which thing (type)."""

    category: Code
    type: Code

    def to_dict(self) -> dict:
        return {"category": self.category.to_dict(), "type": self.type.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> Meaning:
        return cls(Code(**data["category"]), Code(**data["type"]))


ANATOMY = Code("91723000", "SCT", "Anatomical Structure")
ABNORMAL = Code("49755003", "SCT", "Morphologically Abnormal Structure")
FINDING = Code("404684003", "SCT", "Finding")

KNOWN: dict[str, Meaning] = {
    "liver": Meaning(ANATOMY, Code("10200004", "SCT", "Liver")),
    "lung": Meaning(ANATOMY, Code("39607008", "SCT", "Lung")),
    "tumour": Meaning(ABNORMAL, Code("108369006", "SCT", "Neoplasm")),
    "tumor": Meaning(ABNORMAL, Code("108369006", "SCT", "Neoplasm")),
    "liver tumour": Meaning(ABNORMAL, Code("108369006", "SCT", "Neoplasm")),
    "nodule": Meaning(ABNORMAL, Code("27925004", "SCT", "Nodule")),
    "lung nodule": Meaning(ABNORMAL, Code("27925004", "SCT", "Nodule")),
    "benign": Meaning(FINDING, Code("30807003", "SCT", "Benign")),
    "malignant": Meaning(FINDING, Code("21594007", "SCT", "Malignant")),
}


def meaning_of(name: str) -> Meaning:
    """The coded meaning of a label name (case-insensitive); a private code for names not known."""
    known = KNOWN.get(name.strip().lower())
    if known is not None:
        return known
    return Meaning(FINDING if name else ANATOMY, Code(name[:16] or "unnamed", "99MEDMAP", name or "unnamed"))
