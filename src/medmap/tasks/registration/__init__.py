"""Registration: bring a moving image onto a fixed image's grid.

A result is a transform in ITK's convention: it maps points of the fixed image to points of the moving
image (world millimetres, LPS), which is what SimpleITK's ``Resample``, 3D Slicer and the DICOM
registration objects take. ``classical`` aligns a pair without training (rigid, affine, B-spline with
SimpleITK; SyN with ANTs); ``field`` turns any transform into a displacement field on the fixed grid and
measures its folding; ``evaluate`` scores warped label maps; ``outputs`` writes the result folder.
"""
