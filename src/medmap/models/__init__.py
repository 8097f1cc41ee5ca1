"""Networks (from MONAI) built from a Plan, and pretrained weights from local files."""
