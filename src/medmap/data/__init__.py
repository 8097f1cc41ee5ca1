"""Cases and datasets: layouts, fingerprints, preprocessing, and the generated demo data."""
