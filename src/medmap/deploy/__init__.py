"""medmap on the hospital network: the DICOM node (receive, process, send back) and its job store."""
