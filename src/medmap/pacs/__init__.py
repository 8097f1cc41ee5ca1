"""Talking to a PACS as a client: what storage classes medmap exchanges, DICOMweb (QIDO / WADO / STOW),
DIMSE queries and retrieval (C-FIND, C-GET, C-MOVE), and pulling a de-identified cohort from either."""
