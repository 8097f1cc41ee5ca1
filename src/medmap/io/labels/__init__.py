"""Labels as hospitals hold them: RTSTRUCT contours (and, later, DICOM SEG and SR) as label maps."""
