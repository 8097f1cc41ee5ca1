"""DICOM objects medmap writes as results: Segmentation (SEG) and Structured Reports (SR), via highdicom."""
